"""`runs.load_run`: a run loads for inference without its trainer, restoring parameters (and a tokenizer's
codebook) only, and it is what every command that samples, encodes, decodes or evaluates goes through."""

from __future__ import annotations

import math
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from motionaura_jax import config as config_lib
from motionaura_jax import runs


def _save_untrained(config, workdir: pathlib.Path):
    """config.json + one checkpoint of a freshly initialised train state (optimizer state included)."""
    from motionaura_jax.train import loop
    from motionaura_jax.train.checkpoint import Checkpointer

    setup = loop.build(config)
    state = loop.init_state(setup)
    config_lib.save_config(config, workdir)
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        checkpointer.save(1, state, data_state={}, meta={"config": config.to_dict()}, wait=True)
    return state


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    vae_config = config_lib.load_config("experiments/vae.py:tiny", ["--config.mesh.num_devices=1"])
    vae_state = _save_untrained(vae_config, root / "vae")
    t2v_config = config_lib.load_config(
        "experiments/t2v.py:tiny",
        [
            f"--config.tokens.tokenizer_workdir={root / 'vae'}",
            f"--config.tokens.cache={root / 'cache'}",
            "--config.data.num_clips=16",
            "--config.tokens.shard_size=8",
            "--config.tokens.batch_size=8",
            "--config.mesh.num_devices=1",
        ],
    )
    t2v_state = _save_untrained(t2v_config, root / "t2v")
    return {"root": root, "vae": vae_state, "t2v": t2v_state}


def _nbytes(tree) -> int:
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


class _RestoreSpy:
    """Records the top-level keys of every tree Orbax is asked to restore."""

    def __init__(self, monkeypatch):
        self.requested: list[set[str]] = []
        original = ocp.PyTreeCheckpointer.restore

        def restore(checkpointer, path, *args, **kwargs):
            item = kwargs["args"].item
            self.requested.append(set(item))
            return original(checkpointer, path, *args, **kwargs)

        monkeypatch.setattr(ocp.PyTreeCheckpointer, "restore", restore)


@pytest.mark.parametrize(
    ("task", "collections", "left_on_disk"),
    [
        ("vae", {"params", "vq"}, {"opt_state", "disc_params", "disc_opt_state"}),
        ("t2v", {"params"}, {"opt_state"}),
    ],
)
def test_load_run_restores_inference_variables_only(trained, monkeypatch, task, collections, left_on_disk):
    spy = _RestoreSpy(monkeypatch)
    run = runs.load_run(trained["root"] / task)
    assert run.task == task and run.step == 1
    assert set(run.variables) == collections
    assert spy.requested == [collections]  # one read, of exactly these entries of the train state
    state = trained[task]
    assert left_on_disk <= set(state.__dataclass_fields__)  # the train state holds them; the run does not
    for name in collections:  # the values are the checkpoint's, bit for bit
        for got, want in zip(
            jax.tree.leaves(run.variables[name]), jax.tree.leaves(getattr(state, name)), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    skipped = _nbytes([getattr(state, name) for name in left_on_disk])
    restored = _nbytes(run.variables)
    assert _nbytes(state) == restored + skipped and skipped > 0
    print(f"{task}: restored {restored} bytes of {_nbytes(state)} (optimizer state left on disk)")


def test_load_run_checks_task_and_workdir(trained, tmp_path):
    with pytest.raises(runs.RunError, match="'vae' run, not a 't2v'"):
        runs.load_run(trained["root"] / "vae", task="t2v")
    with pytest.raises(runs.RunError, match="config.json not found"):
        runs.load_run(tmp_path)
    (tmp_path / "config.json").write_text((trained["root"] / "vae" / "config.json").read_text())
    with pytest.raises(runs.RunError, match="no checkpoint"):
        runs.load_run(tmp_path)


def test_pipelines_load_from_a_workdir(trained):
    from motionaura_jax.pipelines import T2VGenerator, Tokenizer

    tokenizer = Tokenizer.load(trained["root"] / "vae")
    generator = T2VGenerator.load(trained["root"] / "t2v")
    ids = generator.tokens(["a red circle moving left"], num_steps=3)
    assert ids.shape == (1, 2, 4, 4) and 0 <= ids.min() and ids.max() < tokenizer.num_codes
    assert generator.decode(ids).shape == (1, 5, 16, 16, 3)


def test_commands_and_token_cache_load_through_load_run(trained, tmp_path, monkeypatch):
    """sample, encode, decode, eval recon and the token cache build all go through runs.load_run, and none
    restores a full train state (the trainer's restore is made to fail)."""
    from motionaura_jax.commands import decode, encode, sample
    from motionaura_jax.commands import eval as eval_command
    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.data.video_io import write_video
    from motionaura_jax.train import loop
    from motionaura_jax.train.t2v import ensure_token_cache

    calls: list[str] = []
    original = runs.load_run

    def spy(workdir, **kwargs):
        calls.append(pathlib.Path(workdir).name)
        return original(workdir, **kwargs)

    def no_trainer(*args, **kwargs):
        raise AssertionError("an inference path restored the whole train state")

    monkeypatch.setattr(runs, "load_run", spy)
    monkeypatch.setattr(loop, "restore_state", no_trainer)
    vae, t2v = trained["root"] / "vae", trained["root"] / "t2v"

    assert (
        sample.main(
            [
                f"--ckpt={t2v}",
                "--prompt",
                "a red circle moving left",
                f"--out={tmp_path / 's.mp4'}",
                "--steps=2",
            ]
        )
        == 0
    )
    assert calls == ["t2v", "vae"]
    clip = write_video(
        tmp_path / "in.mp4", MovingShapes(frames=5, size=16, split="test")[0]["video"], fps=8.0
    )
    assert encode.main([str(clip), f"--ckpt={vae}", f"--out={tmp_path / 'ids.npz'}", "--chunk_frames=4"]) == 0
    assert decode.main([str(tmp_path / "ids.npz"), f"--ckpt={vae}", f"--out={tmp_path / 'd.mp4'}"]) == 0
    assert eval_command.main(["recon", f"--ckpt={vae}", f"--out={tmp_path / 'r.json'}", "--num_clips=2"]) == 0
    assert calls == ["t2v", "vae", "vae", "vae", "vae"]
    config = config_lib.load_config(
        "experiments/t2v.py:tiny",
        [f"--config.tokens.tokenizer_workdir={vae}", f"--config.tokens.cache={tmp_path / 'cache'}",
         "--config.data.num_clips=8", "--config.tokens.batch_size=8"],
    )  # fmt: skip
    assert len(ensure_token_cache(config)) == 8
    assert calls[-1] == "vae"


def test_a_config_saved_before_a_key_existed_loads_with_its_default(tmp_path, caplog):
    """read_config fills keys a config.json lacks from the task's defaults (and changes nothing present)."""
    import json
    import logging

    config = config_lib.load_config("experiments/vae.py:tiny")
    config_lib.save_config(config, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["model"]["refine_channels"], saved["loss"]["gradient_l1"]
    saved["model"]["channels"] = [8, 16, 24]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with caplog.at_level(logging.INFO, logger="motionaura_jax.runs"):
        loaded = runs.read_config(tmp_path)
    assert loaded.model.refine_channels == 0 and loaded.loss.gradient_l1 == 0.0
    assert tuple(loaded.model.channels) == (8, 16, 24)  # present keys are the run's own
    assert "model.refine_channels" in caplog.text and "loss.gradient_l1" in caplog.text
    assert config_lib.fill_missing(loaded, config) == []
