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


def test_stage_times_are_printed_and_kept(tmp_path, monkeypatch, capsys):
    import json
    import time

    from motionaura_jax.train import loop

    def fake_train(config, workdir):
        pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
        return loop.TrainResult(state=None, step=7, last_metrics={"loss": 1.0}, preempted=False)

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(quickstart, "_after_tokenizer", lambda workdir: time.sleep(0.3))
    monkeypatch.setattr(quickstart, "_after_t2v", lambda workdir, config: None)
    monkeypatch.setattr(quickstart, "_after_inpaint", lambda workdir: None)
    assert quickstart.main(["--workdir", str(tmp_path), "--config.train.steps=7"]) == 0
    times = json.loads((tmp_path / "stage_times.json").read_text())
    assert list(times) == [task for _, task, _ in quickstart.stage_configs(tmp_path, [])]
    # The evaluation is timed apart from the training.
    assert times["vae"]["eval_s"] >= 0.3 > times["t2v"]["eval_s"]
    for t in times.values():
        assert abs(t["total_s"] - t["train_s"] - t["eval_s"]) < 1e-6
    assert "== tokenizer took 0.0 min (training 0.0 min, evaluation 0.0 min)" in capsys.readouterr().out
