"""`motionaura quickstart` wiring: stages in order, each fed by the previous one, overrides where they fit."""

import pathlib

import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.commands import quickstart


def test_stages_are_wired_and_overrides_apply_where_they_fit(tmp_path):
    configs = quickstart.stage_configs(tmp_path, [("train.steps", "7"), ("tokens.text_max_length", "8")])
    tasks = [task for _, task, _ in configs]
    assert tasks[:2] == ["vae", "t2v"]
    by_task = {task: config for _, task, config in configs}
    assert all(c.train.steps == 7 for c in by_task.values())
    assert pathlib.Path(by_task["t2v"].tokens.tokenizer_workdir) == tmp_path / "vae"
    assert by_task["t2v"].tokens.text_max_length == 8
    # The evaluation after each stage replaces its in-training hooks, unless an override asks for them.
    assert all(c.train.eval_every == 0 and c.train.sample_every == 0 for c in by_task.values())
    again = quickstart.stage_configs(tmp_path, [("train.eval_every", "5")])
    assert all(config.train.eval_every == 5 for _, _, config in again)


def test_override_no_stage_has_is_an_error(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="trian.steps"):
        quickstart.stage_configs(tmp_path, [("trian.steps", "3")])
    assert quickstart.main(["--workdir", str(tmp_path), "--config.trian.steps=3"]) == 2


def test_a_preempted_stage_stops_the_quickstart_before_evaluating(tmp_path, monkeypatch):
    from motionaura_jax.train import loop

    trained, evaluated = [], []

    def fake_train(config, workdir):
        trained.append(pathlib.Path(workdir).name)
        return loop.TrainResult(state=None, step=3, last_metrics={"loss": 1.0}, preempted=True)

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(quickstart, "_after_tokenizer", lambda workdir: evaluated.append(workdir))
    rc = quickstart.main(["--workdir", str(tmp_path), "--config.train.steps=7"])
    assert rc == quickstart.PREEMPTED_EXIT == 143
    assert trained == ["vae"] and evaluated == []  # no evaluation, no text-to-video stage
