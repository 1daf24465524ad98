"""The generic loop: sharded == unsharded, parameter shardings follow the rules, NaN stops cleanly."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from motionaura_jax import config as config_lib
from motionaura_jax.train import loop
from motionaura_jax.train.logging import read_metrics

MESHES = {
    "unsharded": {"num_devices": 1, "data": 1},
    "data8": {"data": 8},
    "data2_fsdp4": {"data": 2, "fsdp": 4},
    "data2_tensor4": {"data": 2, "tensor": 4},
}


def tiny_config(**overrides):
    pairs = [("train.steps", "6"), ("train.log_every", "1"), ("train.ckpt_every", "0")]
    pairs += [(k, str(v)) for k, v in overrides.items()]
    return config_lib.load_config("experiments/tiny.py", pairs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    results = {}
    for name, mesh in MESHES.items():
        config = tiny_config(**{f"mesh.{k}": v for k, v in mesh.items()})
        workdir = tmp_path_factory.mktemp(name)
        result = loop.train(config, workdir)
        results[name] = (result, [m["loss"] for m in read_metrics(workdir)])
    return results


def test_sharded_losses_and_params_equal_unsharded(runs):
    ref_result, ref_losses = runs["unsharded"]
    assert len(ref_losses) == 6 and ref_losses[-1] < ref_losses[0]
    ref_params = jax.device_get(ref_result.state.params)
    for name in ("data8", "data2_fsdp4", "data2_tensor4"):
        result, losses = runs[name]
        np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, err_msg=name)
        jax.tree.map(
            lambda a, b, name=name: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name),
            jax.device_get(result.state.params),
            ref_params,
        )


def test_parameter_shardings_follow_rules(runs):
    fsdp = runs["data2_fsdp4"][0].state.params
    assert fsdp["in_proj"]["kernel"].sharding.spec == P(None, "fsdp")  # (None, embed)
    assert fsdp["mlp_in"]["kernel"].sharding.spec == P("fsdp")  # (embed, mlp); tensor=1 drops
    assert fsdp["mlp_out"]["kernel"].sharding.spec == P(None, "fsdp")  # (mlp, embed)
    assert fsdp["norm"]["scale"].sharding.spec == P()
    # The optimizer moments are sharded like their parameters.
    mu = runs["data2_fsdp4"][0].state.opt_state[0].mu
    assert mu["mlp_in"]["kernel"].sharding.spec == P("fsdp")
    tensor = runs["data2_tensor4"][0].state.params
    assert tensor["mlp_in"]["kernel"].sharding.spec == P(None, "tensor")
    assert tensor["mlp_out"]["kernel"].sharding.spec == P("tensor")
    assert tensor["in_proj"]["kernel"].sharding.spec == P()
    shard_shape = tensor["mlp_in"]["kernel"].sharding.shard_shape(tensor["mlp_in"]["kernel"].shape)
    assert shard_shape == (32, 16)


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    # A learning rate this large overflows to inf/NaN within a few steps.
    config = tiny_config(**{"train.lr": 1e30, "train.steps": 40, "train.ckpt_every": 1, "train.log_every": 1})
    with pytest.raises(loop.NonFiniteLossError, match=r"at step (\d+)") as info:
        loop.train(config, tmp_path)
    bad_step = int(info.value.args[0].split("at step ")[1].split()[0])
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and max(steps) == bad_step - 1
    # Every metrics line that was written is finite.
    assert all(np.isfinite(m["loss"]) for m in read_metrics(tmp_path))


def test_batch_size_not_divisible_by_mesh_is_a_clear_error(tmp_path):
    config = tiny_config(**{"train.batch_size": 12, "mesh.data": 8})
    with pytest.raises(ValueError, match="multiple of data\\*fsdp=8"):
        loop.train(config, tmp_path)


def test_eval_hook_and_profiler_window(tmp_path):
    config = tiny_config(**{"train.eval_every": 3, "train.profile_start": 2, "train.profile_steps": 2})
    loop.train(config, tmp_path)
    evals = [m for m in read_metrics(tmp_path) if "eval/loss" in m]
    assert [m["step"] for m in evals] == [3, 6]
    assert evals[1]["eval/loss"] < evals[0]["eval/loss"] * 1.5 and np.isfinite(evals[1]["eval/loss"])
    assert any((tmp_path / "profile").rglob("*.xplane.pb")), "profiler window wrote no trace"
    assert any((tmp_path / "tensorboard").iterdir())
