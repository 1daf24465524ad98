"""`motionaura plot --run LABEL=WORKDIR [--run ...] --keys loss,eval/psnr --out curves.png [--x minutes]`"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="motionaura plot", description=__doc__)
    parser.add_argument(
        "--run", action="append", required=True, help="LABEL=WORKDIR or just WORKDIR (repeat to overlay runs)"
    )
    parser.add_argument("--keys", required=True, help="comma-separated metric names from metrics.jsonl")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--title", default=None)
    parser.add_argument(
        "--x",
        default="step",
        choices=("step", "minutes"),
        help="x axis: step, or wall minutes since the run started",
    )
    args = parser.parse_args(argv)

    from motionaura_jax.train.plots import plot_runs

    runs = {}
    for item in args.run:
        label, eq, path = item.partition("=")
        runs[label if eq else item] = path if eq else item
    try:
        out = plot_runs(
            runs, [k.strip() for k in args.keys.split(",") if k.strip()], args.out, title=args.title, x=args.x
        )
    except (KeyError, FileNotFoundError) as error:
        print(f"motionaura plot: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0
