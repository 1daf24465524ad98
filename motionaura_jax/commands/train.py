"""`motionaura train --config=experiments/NAME.py[:ARG] --workdir=DIR [--config.key=value ...]`

Re-running the same command on the same workdir resumes. Multi-process: add --coordinator=HOST:PORT
--num_processes=N --process_id=I (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
"""

from __future__ import annotations

import argparse
import sys

from motionaura_jax import config as config_lib


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    rest, overrides = config_lib.split_overrides(argv)
    parser = argparse.ArgumentParser(
        prog="motionaura train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiments/NAME.py[:ARG]")
    parser.add_argument(
        "--workdir",
        required=True,
        help="folder or gs://BUCKET/RUN: checkpoints, metrics.jsonl, config.json, samples",
    )
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-process runs)")
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--process_id", type=int, default=None)
    parser.add_argument(
        "--local_devices", type=int, default=None, help="fake CPU devices per process (tests)"
    )
    return parser.parse_args(rest), overrides


def main(argv: list[str]) -> int:
    args, overrides = parse(argv)
    # The config is resolved and validated before jax starts or anything compiles.
    try:
        config = config_lib.load_config(args.config, overrides)
    except config_lib.ConfigError as error:
        print(f"motionaura train: config error: {error}", file=sys.stderr)
        return 2

    # The workdir (a folder or gs://BUCKET/RUN) is probed before jax starts: an unreachable bucket fails here in
    # one line, with nothing written locally, instead of minutes later in a storage client's traceback.
    from motionaura_jax import atomic, paths

    try:
        paths.check_output(args.workdir, "--workdir", folder=True)  # a plain answer before the probe's
        paths.probe_workdir(args.workdir)
    except paths.WorkdirError as error:
        print(f"motionaura train: {error}", file=sys.stderr)
        return 2

    from motionaura_jax.parallel import distributed
    from motionaura_jax.train import loop
    from motionaura_jax.train.logging import setup_logging

    setup_logging()
    distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, local_device_count=args.local_devices
    )
    try:
        result = loop.train(config, args.workdir)
    except loop.NonFiniteLossError as error:
        print(f"motionaura train: {error}", file=sys.stderr)
        return 1
    except atomic.DiskFullError as error:
        print(f"motionaura train: {error.strerror}", file=sys.stderr)
        return 1
    except paths.WorkdirError as error:
        print(f"motionaura train: {error}", file=sys.stderr)
        return 2
    print(
        f"done: step {result.step}"
        + (" (preempted)" if result.preempted else "")
        + (" (time limit)" if result.out_of_time else "")
        + "".join(f" {k}={v:.5g}" for k, v in result.last_metrics.items() if k in ("loss", "steps_per_sec"))
    )
    return 0
