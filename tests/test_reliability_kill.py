"""Kill anywhere (the short form of tools/kill_anywhere.py) and SIGTERM during an async save, twice."""

from __future__ import annotations

import os
import signal

import jax
import numpy as np

from motionaura_jax import config as config_lib
from motionaura_jax.train import loop
from motionaura_jax.train.checkpoint import Checkpointer
from tools import kill_anywhere


def test_kill_anywhere_short_form_resumes_bit_exact(tmp_path):
    """Synchronous saves: within one checkpoint interval of steps redone (an asynchronous save in flight at the
    kill is lost, so with the default async saves up to an interval plus the steps run during the save are)."""
    import dataclasses

    spec = kill_anywhere.run_specs()["tiny"]
    spec = dataclasses.replace(spec, overrides=[*spec.overrides, "--config.train.async_checkpoint=False"])
    _, overrides = config_lib.split_overrides(spec.overrides)
    reference = tmp_path / "reference"
    loop.train(config_lib.load_config(spec.config, overrides), reference)  # in process: no second start-up
    # Kill times over what a start-up, compile and the 24 steps take here.
    attempts, chains = kill_anywhere.kill_chains(
        spec,
        tmp_path,
        points=3,
        seed=3,
        reference=reference,
        reference_wall=9.0,
        fill={},
        max_kills_per_chain=3,
    )
    summary = kill_anywhere.summarize("tiny", spec, attempts, chains)
    assert summary["kills"] == 3 and sum(summary["phases"].values()) == 3
    assert summary["refused_to_resume"] == 0, [a.error for a in attempts if a.error]
    assert summary["chains_bit_exact"] == summary["chains"] >= 1, chains
    assert summary["over_one_interval"] == 0


def test_compare_runs_sees_a_difference(tmp_path):
    """The comparison the harness relies on fails on runs that differ (else bit-exact would be vacuous)."""
    base = [("train.steps", "2"), ("train.log_every", "1"), ("mesh.num_devices", "1")]
    loop.train(config_lib.load_config("experiments/tiny.py", base), tmp_path / "a")
    loop.train(config_lib.load_config("experiments/tiny.py", [*base, ("train.seed", "1")]), tmp_path / "b")
    problems = kill_anywhere.compare_runs(tmp_path / "a", tmp_path / "b")
    assert any("state leaf" in p for p in problems) and any("metrics at step" in p for p in problems)
    assert kill_anywhere.compare_runs(tmp_path / "a", tmp_path / "a") == []


def test_sigterm_twice_during_an_async_save_commits_and_returns(tmp_path, monkeypatch):
    """Two SIGTERMs land while the step-2 save is still being written: the run saves once more at the next step,
    waits for both saves and returns normally (exit 0 from the command), every checkpoint committed."""
    original = Checkpointer.save
    sent = []

    def save_then_sigterm(self, step, state, **kwargs):
        original(self, step, state, **kwargs)
        if step == 2 and not sent:  # the save is asynchronous: still in flight here
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGTERM)
                sent.append(step)

    monkeypatch.setattr(Checkpointer, "save", save_then_sigterm)
    config = config_lib.load_config(
        "experiments/tiny.py",
        [
            ("train.steps", "50"),
            ("train.ckpt_every", "2"),
            ("train.log_every", "1"),
            ("mesh.num_devices", "1"),
        ],
    )
    result = loop.train(config, tmp_path)
    assert sent == [2, 2] and result.preempted and result.step == 3
    checkpoints = tmp_path / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == ["2", "3"], names  # committed, no temporary folder left behind
    _, state, _ = loop.restore_state(tmp_path)
    np.testing.assert_array_equal(
        np.asarray(jax.device_get(state.params["mlp_in"]["kernel"])),
        np.asarray(jax.device_get(result.state.params["mlp_in"]["kernel"])),
    )
