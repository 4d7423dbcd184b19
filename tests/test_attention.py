"""The attention kernels against the reference, forward and gradient."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2 import attention as A
from gpt2 import model as M
from gpt2.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reference(q, k, v, valid):
  """The reference's arithmetic (`gpt2.model.Attention`) on its own."""
  T = q.shape[1]
  allowed = jnp.tril(jnp.ones((T, T), bool))[None]
  if valid is not None:
    allowed = allowed & valid[:, None, :]
  scores = jnp.einsum("bthd,bshd->bhts", q, k,
                      preferred_element_type=jnp.float32)
  scores = scores / jnp.sqrt(jnp.float32(q.shape[-1])) + jnp.where(
      allowed, 0.0, jnp.finfo(jnp.float32).min)[:, None]
  probs = jax.nn.softmax(scores, axis=-1)
  return jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v)


def _with_gradients(fn, q, k, v, valid, weights):
  """fn's output and the gradients of a weighted sum of it over the real
  queries (a padded query's output is never used)."""
  keep = 1.0 if valid is None else valid[:, :, None, None]
  loss = lambda q, k, v: jnp.sum(fn(q, k, v, valid) * weights * keep)
  out = fn(q, k, v, valid) * keep
  return (out, *jax.grad(loss, argnums=(0, 1, 2))(q, k, v))


# The splash kernel needs lengths in multiples of 128; it runs here in
# Pallas' interpreter.
@pytest.mark.slow
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("impl", ["cpu", "xla", "splash"])
def test_kernel_equals_the_reference(impl, padded):
  B, T, H, D = 2, 128, 2, 32
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q, k, v, weights = (jax.random.normal(key, (B, T, H, D)) for key in keys)
  valid = None
  if padded:  # the second row left-padded by 5
    valid = jnp.ones((B, T), bool).at[1, :5].set(False)
  kernel = lambda q, k, v, valid: A.causal_attention(q, k, v, valid, impl,
                                                     interpret=True)
  got = _with_gradients(kernel, q, k, v, valid, weights)
  want = _with_gradients(_reference, q, k, v, valid, weights)
  for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=name)
    assert float(jnp.abs(b).max()) > 0.1, name  # something to compare


@pytest.mark.slow
def test_cpu_kernel_keeps_bfloat16():
  """The hand-written backward returns gradients in the operands' dtype."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q, k, v, weights = (jax.random.normal(key, (2, 7, 3, 8)).astype(
      jnp.bfloat16) for key in keys)
  kernel = lambda q, k, v, valid: A.causal_attention(q, k, v, valid, "cpu")
  got = _with_gradients(kernel, q, k, v, None, weights)
  want = _with_gradients(_reference, q, k, v, None, weights)
  for a, b in zip(got, want):
    assert a.dtype == b.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a, np.float32),
                               np.asarray(b, np.float32), atol=5e-2, rtol=5e-2)


@pytest.mark.slow
def test_model_with_each_kernel_equals_the_reference():
  """Logits and every parameter's gradient, on a left-padded batch."""
  config = M.GPT2Config.preset("tiny", vocab_size=100, scan_layers=False)
  params = M.init_params(config, jax.random.PRNGKey(0))
  ids = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 100)
  mask = jnp.ones((2, 16), jnp.int32).at[1, :3].set(0)
  real = np.asarray(mask, bool)

  @functools.partial(jax.jit, static_argnums=1)
  @functools.partial(jax.value_and_grad, has_aux=True)
  def loss(p, c):
    logits = M.forward(c, p, ids, attention_mask=mask).logits
    return jnp.sum(jnp.tanh(logits) * mask[..., None]), logits

  (_, want), want_grads = loss(params, config.replace(attention="reference"))
  for impl in ("cpu", "xla"):
    (_, got), got_grads = loss(params, config.replace(attention=impl))
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real],
                               atol=1e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4, err_msg=impl)


def test_auto_picks_by_platform_and_a_forced_choice_is_checked():
  f32, bf16 = jnp.float32, jnp.bfloat16
  # (name, platform, dtype, head size, length) -> the kernel that runs.
  for args, kernel in [
      (("auto", "cpu", f32, 64, 1024), "cpu"),
      (("auto", "gpu", bf16, 64, 1024), "cudnn"),
      # cuDNN takes half-precision operands and heads of at most 128 only.
      (("auto", "gpu", f32, 64, 1024), "xla"),
      (("auto", "gpu", bf16, 160, 1024), "xla"),
      (("auto", "tpu", bf16, 64, 1024), "splash"),
      (("auto", "tpu", bf16, 64, 100), "xla"),
      (("xla", "tpu", f32, 64, 8), "xla")]:
    name, on, dtype, head_dim, length = args
    assert A.resolve(name, dtype=dtype, head_dim=head_dim, length=length,
                     on=on) == kernel, args
  with pytest.raises(UserError, match="attention='flash' is not one of"):
    M.GPT2Config.preset("tiny", attention="flash")
  # Forced onto the wrong platform: one line, not a compiler error.
  config = M.GPT2Config.preset("tiny", vocab_size=100, attention="cudnn")
  with pytest.raises(UserError, match="needs a GPU"):
    jax.eval_shape(lambda p: M.forward(config, p, jnp.zeros((1, 4), int)),
                   M.param_shapes(config))


SPLASH_ON_A_MESH = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
        " --xla_force_host_platform_device_count=4")
    os.environ["JAX_PLATFORMS"] = "cpu"
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from gpt2 import attention as A, sharding
    mesh = sharding.make_mesh(dict(data=1, fsdp=2, model=2))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(key, (4, 128, 4, 32)) for key in keys)
    valid = jnp.ones((4, 128), bool).at[1, :5].set(False)
    real = valid[:, :, None, None]  # a padded query's output is unused
    loss = lambda impl: lambda q, k, v: jnp.sum((A.causal_attention(
        q, k, v, valid, impl, interpret=True) * real) ** 2)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
      got = jax.jit(jax.value_and_grad(loss("splash"), (0, 1, 2)))(q, k, v)
    want = jax.value_and_grad(loss("cpu"), (0, 1, 2))(q, k, v)
    print(max(float(jnp.abs(a - b).max()) for a, b in
              zip(jax.tree.leaves(got), jax.tree.leaves(want))))
""")


@pytest.mark.slow
def test_splash_on_a_mesh_runs_per_device():
  """Under a mesh, each device runs the kernel on its rows and heads
  (`shard_map`); the result equals one device's."""
  proc = subprocess.run([sys.executable, "-c", SPLASH_ON_A_MESH], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert float(proc.stdout.split()[-1]) < 1e-4
