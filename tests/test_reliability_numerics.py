"""Numerical faults: NaN injected into the batch, the loss, the gradients and the EMA codebook at a chosen step
stops the run naming the step and the first non-finite quantity, with the newest finite checkpoint kept;
train.skip_nonfinite skips and counts such steps up to train.max_nonfinite."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.train import finite, loop
from motionaura_jax.train.logging import read_metrics


def tiny_config(**overrides):
    pairs = [
        ("train.steps", "6"),
        ("train.log_every", "2"),
        ("train.ckpt_every", "1"),
        ("mesh.num_devices", "1"),
    ]
    return config_lib.load_config("experiments/tiny.py", pairs + [(k, str(v)) for k, v in overrides.items()])


def committed(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.parametrize(
    "kind, words",
    [("batch", "the input batch"), ("loss", "the loss"), ("grads", "the parameters after the update")],
)
def test_injected_nan_stops_naming_step_and_quantity(tmp_path, kind, words):
    with pytest.raises(loop.NonFiniteLossError) as info:
        loop.train(tiny_config(**{"train.inject_nonfinite": f"{kind}@4"}), tmp_path)
    message = str(info.value)
    assert message.startswith(f"{words} is not finite at step 4 "), message
    # Steps 1-3 were checkpointed (finite); nothing at or after the bad step, and the newest restores finite.
    assert committed(tmp_path) == [1, 2, 3]
    assert "The last good checkpoint is step 3" in message
    _, state, _ = loop.restore_state(tmp_path)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    assert all(np.isfinite(m["loss"]) for m in read_metrics(tmp_path))


def test_skip_nonfinite_counts_and_stops_after_the_limit(tmp_path):
    config = tiny_config(**{"train.inject_nonfinite": "grads@3", "train.skip_nonfinite": True})
    result = loop.train(config, tmp_path / "skip")
    assert result.step == 6 and result.last_metrics["nonfinite_skipped"] == 1.0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result.state.params))
    with pytest.raises(loop.NonFiniteLossError, match=r"at step 3 .*over train.max_nonfinite=0"):
        loop.train(
            tiny_config(
                **{
                    "train.inject_nonfinite": "grads@3",
                    "train.skip_nonfinite": True,
                    "train.max_nonfinite": 0,
                }
            ),
            tmp_path / "limit",
        )


def test_nonfinite_count_carries_across_a_resume(tmp_path):
    """max_nonfinite bounds the whole run: a skip before a resume counts against the limit after it."""
    skip = {"train.skip_nonfinite": True, "train.max_nonfinite": 1}
    first = loop.train(
        tiny_config(**skip, **{"train.steps": 4, "train.inject_nonfinite": "grads@3"}), tmp_path
    )
    assert first.step == 4 and first.last_metrics["nonfinite_skipped"] == 1.0
    # The second skipped step of the run (the first of this attempt) is over the limit of 1.
    with pytest.raises(
        loop.NonFiniteLossError, match=r"at step 5 .*skipped step 2 of the run: over train.max_nonfinite=1"
    ):
        loop.train(tiny_config(**skip, **{"train.inject_nonfinite": "grads@5"}), tmp_path)
    assert committed(tmp_path)[-1] == 4  # nothing saved after the limit was passed


@flax.struct.dataclass
class _State:
    params: dict
    vq: dict
    opt_state: tuple


def test_codebook_injection_and_skip_in_the_guarded_step():
    """The EMA codebook is its own train-state field (a tokenizer's `vq`): named as such, and kept on a skip."""

    def step_fn(state, batch, step):
        new = state.replace(
            params={"w": state.params["w"] + 1.0}, vq={"codebook": state.vq["codebook"] * 0.5}
        )
        return new, {"loss": jnp.sum(batch["x"]), "grad_norm": jnp.ones(())}

    state = _State({"w": jnp.zeros(3)}, {"codebook": jnp.ones((4, 2))}, (jnp.zeros((), jnp.int32),))
    batch = {"x": jnp.ones(2)}
    injection = finite.parse_injection("codebook@2")
    guarded = jax.jit(finite.guarded_step(step_fn, injection, skip=False))
    s1, m1 = guarded(state, batch, jnp.int32(0))
    assert finite.first_bad(jax.device_get(m1)) is None
    s2, m2 = guarded(s1, batch, jnp.int32(1))
    assert finite.first_bad(jax.device_get(m2)) == "the EMA codebook"
    assert np.isnan(np.asarray(s2.vq["codebook"])).all()
    skipping = jax.jit(finite.guarded_step(step_fn, injection, skip=True))
    kept, _ = skipping(s1, batch, jnp.int32(1))
    np.testing.assert_array_equal(np.asarray(kept.vq["codebook"]), np.asarray(s1.vq["codebook"]))
    np.testing.assert_array_equal(np.asarray(kept.params["w"]), np.asarray(s1.params["w"]))
    with pytest.raises(ValueError, match="QUANTITY@STEP"):
        finite.parse_injection("weights@2")
