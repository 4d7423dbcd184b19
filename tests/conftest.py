import os

# Tests run on the CPU whatever the machine has; multi-device tests start
# their own subprocess with XLA_FLAGS set before JAX is imported.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
