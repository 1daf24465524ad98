"""`motionaura quickstart [--workdir=runs/quickstart] [--config.key=value ...]`: the embedded default end to end.

Runs, in order, every stage of the pipeline that exists in this checkout, each on Moving Shapes with its
quickstart experiment, and prints where its outputs (metrics, samples, checkpoints) went. Re-running resumes.
Overrides apply to every stage (e.g. `--config.train.steps=50` for a faster look).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from motionaura_jax import config as config_lib

# (stage, experiment, task name); a stage runs when its experiment file and its task both exist.
STAGES = (
    ("tokenizer", "experiments/vae_quickstart.py", "vae"),
    ("text-to-video", "experiments/t2v_quickstart.py", "t2v"),
    ("inpainting", "experiments/inpaint_quickstart.py", "inpaint"),
)
FALLBACK = ("loop check (tiny)", "experiments/tiny.py", "tiny")


def available_stages() -> list[tuple[str, str, str]]:
    from motionaura_jax.train.tasks import TASKS

    stages = [s for s in STAGES if s[2] in TASKS and (config_lib.REPO_ROOT / s[1]).exists()]
    return stages or [FALLBACK]


def main(argv: list[str]) -> int:
    rest, overrides = config_lib.split_overrides(argv)
    parser = argparse.ArgumentParser(prog="motionaura quickstart", description=__doc__)
    parser.add_argument("--workdir", default="runs/quickstart")
    args = parser.parse_args(rest)

    from motionaura_jax.train import loop
    from motionaura_jax.train.logging import setup_logging

    setup_logging()
    root = pathlib.Path(args.workdir)
    for stage, experiment, task in available_stages():
        workdir = root / task
        print(f"== {stage}: {experiment} -> {workdir}", flush=True)
        try:
            config = config_lib.load_config(experiment, overrides)
        except config_lib.ConfigError as error:
            print(f"motionaura quickstart: config error: {error}", file=sys.stderr)
            return 2
        result = loop.train(config, workdir)
        summary = " ".join(f"{k}={v:.4g}" for k, v in result.last_metrics.items())
        print(f"== {stage} done at step {result.step}: {summary}\n   outputs: {workdir.resolve()}", flush=True)
    return 0
