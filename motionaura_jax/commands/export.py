"""`motionaura export --ckpt=RUN --out=DIR [--step N] [--max_shard_size 2GB]`: a run as safetensors + config + card.

Writes the run's inference variables (parameters, and a tokenizer's EMA codebook) as `model.safetensors` (or
numbered shards with `model.safetensors.index.json` above --max_shard_size, as Hugging Face does), its resolved
`config.json`, a model card `README.md` (task, data, steps, the metrics measured in the run) and `export.json`.
`runs.load_run(DIR)` (and every command taking --ckpt) reads the folder without Orbax; `safetensors` alone
opens the weights.
"""

from __future__ import annotations

import argparse
import re
import sys

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}


def parse_size(text: str) -> int:
    """ "2GB" / "500MB" / "123" -> bytes (Hugging Face's `max_shard_size` spelling)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 2GB, 500MB or a byte count")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="motionaura export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, help="the training workdir (local or gs://)")
    parser.add_argument("--out", required=True, help="folder to write (local or gs://)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    parser.add_argument(
        "--max_shard_size", type=parse_size, default="2GB", help="split the weights above this (default 2GB)"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    from motionaura_jax import paths, runs

    paths.check_output(args.out, "--out", folder=True)  # before the checkpoint is read

    try:
        out = runs.export_run(args.ckpt, args.out, step=args.step, max_shard_bytes=args.max_shard_size)
    except runs.RunError as error:
        print(f"motionaura export: {error}", file=sys.stderr)
        return 2
    files = sorted(p.name for p in out.iterdir())
    print(f"exported {args.ckpt} to {out}: {', '.join(files)}")
    return 0
