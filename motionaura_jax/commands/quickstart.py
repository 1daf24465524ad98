"""`motionaura quickstart [--workdir=runs/quickstart] [--config.key=value ...]`: the embedded default end to end.

Runs every stage of the pipeline that exists in this checkout on Moving Shapes, each with its quickstart
experiment, in WORKDIR/<task>; each stage's outputs feed the next (the text-to-video stage tokenizes with the
tokenizer just trained). After the tokenizer it evaluates reconstructions (`eval recon`), after text-to-video it
samples four prompts, then generates and judges 64 seen and 64 held-out captions (`eval t2v --ckpt`, contact
sheets and GIFs in WORKDIR/t2v/judged), after inpainting (a LoRA fine-tune of that text-to-video
run) it inpaints 16 held-out clips and judges them (`eval inpaint`). Re-running resumes where it stopped. A
SIGTERM during a stage's training saves its checkpoint and exits with status 143 before any evaluation or
later stage. Each stage's wall time (training, then evaluation) is printed as it ends and kept in
WORKDIR/stage_times.json, so a run's time budget is read from the run itself.

An override applies to every stage whose config has that key (`--config.train.steps=50` shortens them all);
a key no stage has is an error. The stages' in-training eval and sample hooks are off (`train.eval_every=0`,
`train.sample_every=0`): the evaluation after each stage replaces them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from etils import epath

from motionaura_jax import atomic, paths
from motionaura_jax import config as config_lib

# (stage, experiment, task name); a stage runs when its experiment file and its task both exist.
STAGES = (
    ("tokenizer", "experiments/vae.py:quickstart", "vae"),
    ("text-to-video", "experiments/t2v.py:quickstart", "t2v"),
    ("inpainting", "experiments/inpaint.py:quickstart", "inpaint"),
)
FALLBACK = ("loop check (tiny)", "experiments/tiny.py", "tiny")
# The exit status of a process ended by SIGTERM: a scheduler or shell sees that the quickstart did not finish.
PREEMPTED_EXIT = 128 + 15


def available_stages() -> list[tuple[str, str, str]]:
    from motionaura_jax.train.tasks import TASKS

    stages = [s for s in STAGES if s[2] in TASKS and (config_lib.REPO_ROOT / s[1].partition(":")[0]).exists()]
    return stages or [FALLBACK]


def stage_configs(root: epath.Path, overrides: list[tuple[str, str]]) -> list[tuple[str, str, object]]:
    """Loads every stage's config, wires each stage to the previous one, applies the overrides that fit."""
    used: set[str] = set()
    configs = []
    for stage, experiment, task in available_stages():
        config = config_lib.load_experiment(experiment)
        if task == "t2v":
            config.tokens.tokenizer_workdir = str(root / "vae")
        if task == "inpaint":
            config.inpaint.t2v_workdir = str(root / "t2v")
        # Each stage is evaluated after it trains (below), on more clips than its in-training hooks use: those
        # would repeat that work inside the demo's time budget. An override turns them back on.
        config.train.eval_every = 0
        config.train.sample_every = 0
        keys = set(config_lib.all_keys(config))
        for key, value in overrides:
            if key in keys:
                config_lib.apply_override(config, key, value)
                used.add(key)
        config.lock()
        configs.append((stage, task, config))
    unused = [key for key, _ in overrides if key not in used]
    if unused:
        raise config_lib.ConfigError(f"no quickstart stage has the config key(s) {unused}")
    return configs


def _after_tokenizer(workdir: epath.Path) -> None:
    from motionaura_jax.commands import eval as eval_command

    eval_command.main(
        [
            "recon",
            f"--ckpt={workdir}",
            f"--out={workdir / 'eval_recon.json'}",
            f"--sheet={workdir / 'reconstructions.png'}",
        ]
    )


def _after_t2v(workdir: epath.Path, config) -> None:
    from motionaura_jax.commands import eval as eval_command
    from motionaura_jax.commands import sample

    samples = workdir / "quickstart_samples"
    prompts = [arg for p in config.sample.prompts for arg in ("--prompt", p)]
    sample.main([f"--ckpt={workdir}", f"--out={samples / 'sample.mp4'}", *prompts])
    # The judged accuracy: 64 captions of trained combinations and 64 of the 8 never-trained ones.
    judged = workdir / "judged"
    eval_command.main(["t2v", f"--ckpt={workdir}", f"--out={judged / 'metrics.json'}", f"--sheets={judged}"])


def _after_inpaint(workdir: epath.Path) -> None:
    from motionaura_jax.commands import eval as eval_command

    eval_command.main(
        [
            "inpaint",
            f"--ckpt={workdir}",
            f"--out={workdir / 'eval_inpaint.json'}",
            "--num_clips=16",
            f"--sheet={workdir / 'inpaint_examples.png'}",
        ]
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def write_stage_times(root: epath.Path, times: dict[str, dict[str, float]]) -> None:
    """WORKDIR/stage_times.json: {task: {"train_s", "eval_s", "total_s"}} of the stages run by this command
    (a resumed stage's training time is that of the resumed part only)."""
    atomic.write_text(root / "stage_times.json", json.dumps(times, indent=2) + "\n")


def main(argv: list[str]) -> int:
    rest, overrides = config_lib.split_overrides(argv)
    parser = argparse.ArgumentParser(
        prog="motionaura quickstart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", default="runs/quickstart")
    args = parser.parse_args(rest)
    paths.check_output(args.workdir, "--workdir", folder=True)  # before any stage trains
    root = paths.as_path(args.workdir)
    try:
        configs = stage_configs(root, overrides)
    except config_lib.ConfigError as error:
        print(f"motionaura quickstart: config error: {error}", file=sys.stderr)
        return 2

    from motionaura_jax.train import loop
    from motionaura_jax.train.logging import setup_logging

    setup_logging()
    times: dict[str, dict[str, float]] = {}
    for stage, task, config in configs:
        workdir = root / task
        print(f"== {stage}: {task} -> {workdir}", flush=True)
        started = time.perf_counter()
        result = loop.train(config, workdir)
        trained = time.perf_counter()
        if result.preempted:
            # Evaluating, or training the next stage on, a half-trained run would report numbers of a model
            # nobody asked for; the checkpoint is saved and the same command resumes from it.
            print(
                f"== {stage} preempted (SIGTERM) at step {result.step}: checkpoint saved in {workdir}; "
                "run the same command again to resume",
                file=sys.stderr,
                flush=True,
            )
            return PREEMPTED_EXIT
        summary = " ".join(f"{k}={v:.4g}" for k, v in result.last_metrics.items())
        print(f"== {stage} trained to step {result.step}: {summary}", flush=True)
        if task == "vae":
            _after_tokenizer(workdir)
        elif task == "t2v":
            _after_t2v(workdir, config)
        elif task == "inpaint":
            _after_inpaint(workdir)
        done = time.perf_counter()
        times[task] = {"train_s": trained - started, "eval_s": done - trained, "total_s": done - started}
        write_stage_times(root, times)
        print(f"== {stage} outputs: {workdir.resolve()}", flush=True)
        print(
            f"== {stage} took {_minutes(done - started)} (training {_minutes(trained - started)}, "
            f"evaluation {_minutes(done - trained)}); all stages so far "
            f"{_minutes(sum(t['total_s'] for t in times.values()))}",
            flush=True,
        )
    return 0
