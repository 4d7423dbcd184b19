# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Your posts in, a GPT-2 that writes like you out
#
# This notebook runs the project's whole path on one machine: it installs
# the project, imports the archive a platform gave you (or a `posts.jsonl`
# from `launch.scrape`), prepares the corpus, fine-tunes GPT-2 on it, trains
# the sentiment head, writes a few answers to an ask with their scores, and
# starts the operator's console with a link.
#
# The model is chosen by the GPU it finds: a GPU with 15 GB or more (a free
# 16 GB notebook GPU) fine-tunes OpenAI's 1.5B (`gpt2-xl`) with LoRA
# adapters; a smaller GPU fine-tunes the 124M (`gpt2`) whole; no GPU trains
# a tiny GPT-2 from scratch on the CPU (minutes, and it writes nonsense:
# that preset is for trying the path, and for the project's CI, which runs
# this notebook). Set `PRESET` to choose yourself.
#
# Each step is one of the project's commands (`python -m launch.…`), run
# here as a subprocess, so a cell is also what you would type in a
# terminal. This kernel never imports JAX: the commands get the GPU's whole
# memory.

# %% tags=["parameters"]
# Your archive: the zip (or folder) a platform gave you, a posts.jsonl from
# launch.scrape, or "upload" to pick a file (in Colab).
ARCHIVE = "upload"
# The archive's kind: tumblr, wordpress, twitter, mastodon, discord or
# facebook ("" for a posts.jsonl).
KIND = "twitter"
# Your name or handle as the archive writes it (your turns are the ones the
# model learns; everyone else is pseudonymized in direct messages).
ME = "myhandle"
# The name your turns are written under, and the bot's blog.
BLOG = "mybot"
# auto (by the GPU found), tiny, 124m or 1558m-lora.
PRESET = "auto"
# Training steps (0: the preset's own).
STEPS = 0
# Where everything goes (a mounted drive keeps it across sessions, e.g.
# "/content/drive/MyDrive/tumblr-bot"; training resumes from it).
WORKDIR = "runs/notebook"
# An ask for the samples, and how many answers to write.
ASK = "What do you think about when you can't sleep?"
ASKER = "a-friend"
CANDIDATES = 4
MAX_NEW_TOKENS = 120
# The console's port (on this machine's loopback).
PORT = 7860
# Install the project (and JAX for the GPU) with pip; False when it is
# installed already.
INSTALL = True
# Where to clone the project from when this notebook is not inside a
# clone of it (Colab): its git URL.
REPO_URL = ""

# %% [markdown]
# ## 1. Install
#
# Inside a clone of the project (Jupyter started in it), the clone is used;
# elsewhere (Colab) `REPO_URL` is cloned first. With a GPU, JAX's CUDA
# build is installed too (the `[gpu]` extra).

# %%
import json
import os
import shutil
import subprocess
import sys


def find_repo():
  """The clone this notebook sits in (or is started from), else None."""
  for folder in (os.getcwd(), os.path.dirname(os.getcwd())):
    if os.path.exists(os.path.join(folder, "launch", "finetune.py")):
      return os.path.abspath(folder)
  return None


REPO = find_repo()
if REPO is None:
  if not REPO_URL:
    raise SystemExit("this notebook is not inside a clone of the project: "
                     "set REPO_URL (its git URL) in the parameters cell")
  REPO = os.path.abspath("tumblr-gpt2-jax")
  if not os.path.exists(REPO):
    subprocess.run(["git", "clone", "-q", REPO_URL, REPO], check=True)
os.chdir(REPO)


def gpu_memory_mib():
  """The first NVIDIA GPU's memory in MiB (nvidia-smi), or 0 without one."""
  if not shutil.which("nvidia-smi"):
    return 0
  out = subprocess.run(
      ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,"
       "nounits"], capture_output=True, text=True, check=False).stdout
  return int(out.split()[0]) if out.split() else 0


GPU_MIB = gpu_memory_mib()
if INSTALL:
  extras = "console,gpu" if GPU_MIB else "console"
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e",
                  f".[{extras}]"], check=True)
print(f"project: {REPO}; GPU: "
      f"{f'{GPU_MIB / 1024:.1f} GiB' if GPU_MIB else 'none'}")


# %%
import codecs  # pylint: disable=g-import-not-at-top


def run(*args):
  """Runs `python -m ARGS...` from the project, showing its output as it
  comes (progress bars included); a failure stops the notebook with the
  command's last line (the project's `error:` line for a user mistake)."""
  print("$ python -m", " ".join(args), flush=True)
  decode = codecs.getincrementaldecoder("utf-8")("replace").decode
  tail = ""
  with subprocess.Popen([sys.executable, "-m", *args],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT) as process:
    while chunk := process.stdout.read1(1 << 16):
      text = decode(chunk)
      sys.stdout.write(text)
      sys.stdout.flush()
      tail = (tail + text)[-4000:]
  if process.returncode:
    lines = [line for line in tail.replace("\r", "\n").splitlines()
             if line.strip()]
    raise RuntimeError(f"python -m {args[0]} failed: "
                       f"{lines[-1] if lines else process.returncode}")


os.makedirs(WORKDIR, exist_ok=True)
PATHS = {name: os.path.join(WORKDIR, name) for name in (
    "posts.jsonl", "docs.jsonl", "train", "heads", "bot.db",
    "console.log")}

# %% [markdown]
# ## 2. Your posts
#
# `launch.import_archive` reads the archive as the platform hands it out
# (docs/corpus.md lists the files each kind holds) and writes the posts
# `launch.scrape` would; conversations stay threads, with your turns last.
# A posts.jsonl is used as it is.

# %%
if ARCHIVE == "upload":
  try:
    from google.colab import files  # pylint: disable=import-error
  except ImportError:
    raise SystemExit("ARCHIVE='upload' works in Colab; elsewhere set ARCHIVE "
                     "to the archive's path") from None
  uploaded = files.upload()
  ARCHIVE = os.path.abspath(next(iter(uploaded)))
if not ARCHIVE or not os.path.exists(ARCHIVE):
  raise SystemExit(f"ARCHIVE {ARCHIVE!r} does not exist: give the path of "
                   f"your archive or posts.jsonl")
if KIND:
  run("launch.import_archive", f"--kind={KIND}", f"--archive={ARCHIVE}",
      f"--me={ME}", f"--out={PATHS['posts.jsonl']}")
else:
  shutil.copyfile(ARCHIVE, PATHS["posts.jsonl"])

# %% [markdown]
# ## 3. The corpus
#
# `launch.prepare_corpus` writes each post as a thread in the text format,
# your turns under `BLOG`'s name, and keeps a validation split.

# %%
rename = [f"--rename={ME}:{BLOG}"] if ME and ME != BLOG else []
run("launch.prepare_corpus", f"--posts={PATHS['posts.jsonl']}",
    f"--out={PATHS['docs.jsonl']}", *rename)
with open(PATHS["docs.jsonl"], encoding="utf-8") as f:
  first = json.loads(f.readline())["text"]
print("\nthe first document:\n\n" + first[:600])

# %% [markdown]
# ## 4. Fine-tune
#
# | preset | model | how | where |
# |---|---|---|---|
# | `1558m-lora` | OpenAI's 1.5B (`gpt2-xl`) | LoRA adapters, base frozen in bfloat16 | a 16 GB GPU (13.3 GiB) |
# | `124m` | OpenAI's 124M (`gpt2`) | every weight | any GPU |
# | `tiny` | a 2-layer GPT-2 and its own BPE | from scratch | a CPU |
#
# The Hub models download once into the Hugging Face cache. The run
# checkpoints as it goes: run this cell again (after a disconnect, or with
# more `STEPS`) and it resumes.

# %%
if PRESET == "auto":
  PRESET = "1558m-lora" if GPU_MIB >= 15000 else "124m" if GPU_MIB else "tiny"
CONFIGS = {"tiny": "configs/gpt2_tiny.py", "124m": "configs/gpt2_124m.py",
           "1558m-lora": "configs/gpt2_1558m_lora.py"}
if PRESET not in CONFIGS:
  raise SystemExit(f"PRESET {PRESET!r} is none of auto, {', '.join(CONFIGS)}")
train_args = [f"--config={CONFIGS[PRESET]}", f"--workdir={PATHS['train']}",
              f"--config.data={PATHS['docs.jsonl']}"]
if PRESET == "124m":
  train_args.append("--config.init=gpt2")
if STEPS:
  train_args.append(f"--config.total_steps={STEPS}")
print(f"preset {PRESET}")
run("launch.finetune", *train_args)

# %%
from IPython.display import Image, display  # pylint: disable=g-import-not-at-top

loss_png = os.path.join(WORKDIR, "loss.png")
subprocess.run([sys.executable, "-c", "import sys; from gpt2 import train; "
                "train.plot_metrics(sys.argv[1], sys.argv[2])",
                PATHS["train"], loss_png], check=True)
display(Image(loss_png))

# %% [markdown]
# ## 5. The sentiment head
#
# A small head on the frozen generator's activations learns the mood of
# your posts (VADER's score of each). The bot reads it to keep a mood; here
# it scores the samples. (The selector, which predicts how well a post
# will do, needs note counts: `launch.scrape` gives them, see docs/heads.md.)

# %%
head_config = "configs/sentiment.py" + (":tiny" if PRESET == "tiny" else "")
run("launch.train_selector", f"--config={head_config}",
    f"--config.model={PATHS['train']}", f"--config.data={PATHS['posts.jsonl']}",
    f"--workdir={os.path.join(PATHS['heads'], 'sentiment')}")

# %% [markdown]
# ## 6. A few answers, with their scores
#
# The ask is written as the bot would see it; `launch.sample` writes
# `CANDIDATES` answers in one jitted call, and `launch.score` gives each its
# sentiment. `mean logprob` is the model's own confidence in the words it
# chose.

# %%
import datetime  # pylint: disable=g-import-not-at-top

from bot import text_format  # pylint: disable=g-import-not-at-top
from bot.tumblr.thread import ASKED, Thread, Turn  # pylint: disable=g-import-not-at-top

prompt = text_format.ask_prompt(Thread((Turn(ASKER, ASKED, ASK),)), BLOG,
                                datetime.datetime.now(datetime.timezone.utc))
print(prompt)
samples = subprocess.run(
    [sys.executable, "-m", "launch.sample", f"--model={PATHS['train']}",
     f"--prompt={prompt}", f"--num_samples={CANDIDATES}",
     f"--max_new_tokens={MAX_NEW_TOKENS}", "--json"],
    capture_output=True, text=True, check=False)
if samples.returncode:
  raise RuntimeError(samples.stderr.strip().splitlines()[-1])
candidates = [json.loads(line) for line in samples.stdout.splitlines()
              if line.startswith("{")]
candidates_path = os.path.join(WORKDIR, "candidates.jsonl")
with open(candidates_path, "w", encoding="utf-8") as f:
  for c in candidates:
    answer = text_format.split_continuation(c["text"])
    f.write(json.dumps({"prompt": prompt, "text": answer.body,
                        "tags": answer.tags,
                        "mean_logprob": c["mean_logprob"]}) + "\n")
scored_path = os.path.join(WORKDIR, "scored.jsonl")
run("launch.score", f"--heads={PATHS['heads']}", f"--in={candidates_path}",
    f"--out={scored_path}")
with open(scored_path, encoding="utf-8") as f:
  scored = [json.loads(line) for line in f]
for i, row in enumerate(scored):
  tags = " ".join(f"#{t}" for t in row["tags"])
  print(f"\n--- candidate {i + 1}: sentiment {row['sentiment']:+.2f}, "
        f"mean logprob {row['mean_logprob']:.2f} {tags}\n{row['text']}")

# %% [markdown]
# ## 7. The console
#
# The operator's console (write live, the review queue, the history, the
# training curves) runs beside this notebook, in `--dry_run`: it sends
# nothing to Tumblr. To let it post, put your Tumblr keys in a credentials
# file (see docs/bot.md) and start it without `--dry_run`. In Colab the link
# goes through Colab's proxy; elsewhere it is this machine's loopback.

# %%
import atexit  # pylint: disable=g-import-not-at-top
import time  # pylint: disable=g-import-not-at-top
import urllib.request  # pylint: disable=g-import-not-at-top

bot_config = "configs/bot.py" + (":tiny" if PRESET == "tiny" else "")
console_log = open(PATHS["console.log"], "w", encoding="utf-8")  # pylint: disable=consider-using-with
CONSOLE = subprocess.Popen(  # pylint: disable=consider-using-with
    [sys.executable, "-m", "launch.console", f"--config={bot_config}",
     f"--config.blog={BLOG}", f"--config.model={PATHS['train']}",
     f"--config.heads={PATHS['heads']}", f"--config.state={PATHS['bot.db']}",
     f"--workdir={PATHS['train']}", f"--port={PORT}", "--dry_run"],
    stdout=console_log, stderr=subprocess.STDOUT)
atexit.register(CONSOLE.terminate)
local_url = f"http://127.0.0.1:{PORT}/"
deadline = time.time() + 900
while True:
  if CONSOLE.poll() is not None:
    with open(PATHS["console.log"], encoding="utf-8") as f:
      raise RuntimeError("the console stopped:\n" + f.read()[-2000:])
  try:
    with urllib.request.urlopen(local_url, timeout=5) as answer:
      if answer.status == 200:
        break
  except OSError:
    pass
  if time.time() > deadline:
    raise RuntimeError(f"the console did not answer in 15 minutes; its log: "
                       f"{PATHS['console.log']}")
  time.sleep(2)
try:
  from google.colab.output import eval_js  # pylint: disable=import-error
  CONSOLE_URL = eval_js(f"google.colab.kernel.proxyPort({PORT})")
except ImportError:
  CONSOLE_URL = local_url
print(f"the console of {BLOG}: {CONSOLE_URL}")

# %% [markdown]
# The console stops with this notebook's kernel, or with
# `CONSOLE.terminate()`. Next: the docs' pages on the bot
# (`launch.run_bot`), the selector, and exporting the model
# (`launch.convert --to=hf`, or `--to=peft` for the LoRA adapters).
