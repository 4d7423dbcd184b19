"""Sharded training on 8 simulated CPU devices, and the 1.5B memory check."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh process: XLA_FLAGS must be set before JAX is imported.
SHARDED_VS_SINGLE = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
        " --xla_force_host_platform_device_count=8")
    os.environ["JAX_PLATFORMS"] = "cpu"
    import json
    import jax
    import numpy as np
    from configs import gpt2_tiny
    from gpt2 import sharding, train
    from gpt2.model import GPT2Config

    config = gpt2_tiny.get_config()
    config.seq_len, config.batch_size, config.accumulate = 32, 8, 2
    config.only_train_transformer_layers = True
    config.lr, config.warmup = 1e-3, 0
    # Adam divides by sqrt(v) + eps: with GPT-2's eps of 1e-8 an entry whose
    # gradient is mathematically zero (the key bias) or ~1e-9 moves by up to
    # lr on rounding noise alone, in any two programs that sum in different
    # orders. A larger eps keeps the update a smooth function of the
    # gradient, so the comparison below tests the sharding, not that.
    config.adam_eps = 1e-3
    model_config = GPT2Config.preset("tiny", vocab_size=256)
    batches = np.random.default_rng(0).integers(0, 256, (3, 2, 8, 32))
    devices = jax.devices()
    assert len(devices) == 8
    params = None
    out = {}
    for name, shape, devs, scan in [
        ("single", dict(data=1, fsdp=1, model=1), devices[:1], True),
        ("fsdp8", dict(data=1, fsdp=-1, model=1), devices, True),
        ("data2_fsdp2_model2", dict(data=2, fsdp=2, model=2), devices, True),
        # The same step with the blocks unrolled (scan_layers=False).
        ("unrolled_data2_fsdp2_model2", dict(data=2, fsdp=2, model=2),
         devices, False)]:
      mesh = sharding.make_mesh(shape, devs)
      steps = train.build_steps(model_config.replace(scan_layers=scan),
                                config, mesh)
      if params is None:
        params = jax.device_get(steps.init_params(jax.random.PRNGKey(0)))
      state = steps.init(jax.device_put(params, steps.param_shardings))
      losses, norms = [], []
      for batch in batches:
        state, metrics = steps.train(
            state, jax.device_put(batch.astype(np.int32),
                                  steps.batch_sharding), None)
        losses.append(float(metrics["loss"]))
        norms.append(float(metrics["grad_norm"]))
      kernel = state["params"]["h"]["mlp"]["c_fc"]["kernel"]
      mu = state["opt_state"].inner_states["train"].inner_state[1].mu
      leaves = [np.asarray(x) for x in
                jax.tree.leaves(jax.device_get(state["params"]))]
      if name == "single":
        single_losses, single_norms, single_leaves = losses, norms, leaves
      out[name] = {
          "losses": losses,
          "loss_rel_diff": max(abs(a - b) / abs(b) for a, b in
                               zip(losses, single_losses)),
          "grad_norm_rel_diff": max(abs(a - b) / abs(b) for a, b in
                                    zip(norms, single_norms)),
          "param_max_diff": max(float(np.abs(a - b).max()) for a, b in
                                zip(leaves, single_leaves)),
          "params_moved": max(float(np.abs(a - np.asarray(b)).max()) for a, b
                              in zip(leaves, jax.tree.leaves(params))),
          "kernel_spec": [str(a) for a in kernel.sharding.spec],
          "mu_spec": [str(a) for a in
                      mu["h"]["mlp"]["c_fc"]["kernel"].sharding.spec],
          "kernel_shard_shape": list(
              kernel.addressable_shards[0].data.shape),
      }

    # LoRA: rank-4 adapters on a frozen base, sharded by their own logical
    # axes, against the same step on one device.
    lora_config = model_config.replace(
        lora_rank=4, lora_alpha=8.0,
        lora_targets=("attn.c_attn", "mlp.c_fc"))
    lora = {}
    for name, shape, devs in [
        ("single", dict(data=1, fsdp=1, model=1), devices[:1]),
        ("data2_fsdp2_model2", dict(data=2, fsdp=2, model=2), devices)]:
      mesh = sharding.make_mesh(shape, devs)
      steps = train.build_steps(lora_config, config, mesh)
      state = steps.init(steps.init_params(jax.random.PRNGKey(1)))
      base = jax.device_put(params, steps.base_shardings)
      for batch in batches:
        state, metrics = steps.train(
            state, jax.device_put(batch.astype(np.int32),
                                  steps.batch_sharding), base)
      fc = state["params"]["h"]["mlp"]["c_fc"]
      lora[name] = {
          "loss": float(metrics["loss"]),
          "leaves": [np.asarray(x).tolist() for x in
                     jax.tree.leaves(jax.device_get(state["params"]))],
          "a_spec": [str(a) for a in fc["a"].sharding.spec],
          "b_spec": [str(a) for a in fc["b"].sharding.spec],
          "base_spec": [str(a) for a in
                        base["h"]["mlp"]["c_fc"]["kernel"].sharding.spec]}
    out["lora"] = lora
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_sharded_step_equals_single_device_step():
  proc = subprocess.run([sys.executable, "-c", SHARDED_VS_SINGLE], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  lora = out.pop("lora")
  single = out.pop("single")
  assert single["kernel_shard_shape"] == [2, 64, 256]
  expected_specs = {"fsdp8": (["None", "fsdp", "model"], [2, 8, 256]),
                    "data2_fsdp2_model2": (["None", "fsdp", "model"],
                                           [2, 32, 128])}
  expected_specs["unrolled_data2_fsdp2_model2"] = expected_specs[
      "data2_fsdp2_model2"]
  for name, result in out.items():
    spec, shard = expected_specs[name]
    # FSDP: parameters and Adam moments split the same way.
    assert result["kernel_spec"] == spec and result["mu_spec"] == spec
    assert result["kernel_shard_shape"] == shard
    assert result["loss_rel_diff"] <= 1e-5, (name, result, single["losses"])
    assert result["grad_norm_rel_diff"] <= 1e-5, (name, result)
    assert result["param_max_diff"] <= 1e-5, (name, result)
    # The steps moved the weights by far more than the tolerance.
    assert result["params_moved"] > 1e-4, result["params_moved"]

  # LoRA's adapters split like the layers they adapt (a: (layers, embed,
  # rank), b: (layers, rank, mlp)), the base like the model, and the
  # sharded step equals the single-device one.
  sharded, one = lora["data2_fsdp2_model2"], lora["single"]
  assert sharded["a_spec"] == ["None", "fsdp", "None"]
  assert sharded["b_spec"] == ["None", "None", "model"]
  assert sharded["base_spec"] == ["None", "fsdp", "model"]
  assert abs(sharded["loss"] - one["loss"]) <= 1e-5 * abs(one["loss"])
  for a, b in zip(sharded["leaves"], one["leaves"]):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert max(np.abs(np.asarray(b)).max() for b in one["leaves"][1::2]) > 1e-3


@pytest.mark.slow
def test_compile_check_1558m_fits_a_v3_core():
  """GPT-2 1.5B, Adam, batch 24 x 1024 x 5 accumulated, on a v3-8 mesh."""
  proc = subprocess.run(
      [sys.executable, "-m", "launch.compile_check",
       "--config=configs/gpt2_1558m_tpuv3.py", "--json"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout)
  assert report["devices"] == 8
  # Adam state + f32 params alone are 2.1 GiB per device with FSDP, so a
  # number below that means the check measured nothing.
  assert 2.1 * 2**30 < report["per_device_bytes"] < 16 * 2**30, report
