"""`motionaura compile --config=experiments/NAME.py[:ARG] --topology=v5p-64 [--config.key=value ...]`

Compiles the train step `motionaura train` would run (same shardings, donated state, remat, dtype) for a TPU
topology ahead of time, on this CPU, through libtpu (no TPU needed), and reports per chip: argument, output,
temporary and total bytes against the chip's HBM, FLOPs per step, the step time they imply at --mfu, and the
compile time. Topologies: Cloud TPU slice names (v4-32, v5e-16, v5p-64, v6e-256; v4/v5p count TensorCores,
v5e/v6e chips) or KIND:AxBxC (v5e:2x2). The mesh is config.mesh (-1 fills the chips).

  --sample   also compile the text-to-video sampler (t2v only; one prompt per chip unless --sample_batch)
  --out      FILE.json (the reports) and FILE.md (the table) beside it

Exit status: 0 when every step fits in --max_hbm of HBM per chip; 1 when one does not (the numbers and the levers
that would make it fit are printed); 2 for a config, mesh or topology that cannot be used.
"""

from __future__ import annotations

import argparse
import os
import sys

from motionaura_jax import config as config_lib


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    rest, overrides = config_lib.split_overrides(argv)
    parser = argparse.ArgumentParser(
        prog="motionaura compile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiments/NAME.py[:ARG]")
    parser.add_argument("--topology", required=True, help="v5p-64, v5e-256, v4-32, v6e-8, or v5e:2x2")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation for the step time")
    parser.add_argument("--max_hbm", type=float, default=0.8, help="allowed fraction of HBM per chip")
    parser.add_argument("--sample", action="store_true", help="also compile the t2v sampler")
    parser.add_argument("--sample_batch", type=int, default=None, help="prompts per sampler call")
    parser.add_argument(
        "--no_flops", action="store_true", help="skip the extra compiles that count scanned FLOPs"
    )
    parser.add_argument("--out", default=None, help="write FILE.json and FILE.md")
    return parser.parse_args(rest), overrides


def main(argv: list[str]) -> int:
    args, overrides = parse(argv)
    if args.out:  # compiling takes minutes: an unwritable --out is named before
        from motionaura_jax import paths

        paths.check_output(args.out, "--out")
    try:
        config = config_lib.load_config(args.config, overrides)
    except config_lib.ConfigError as error:
        print(f"motionaura compile: config error: {error}", file=sys.stderr)
        return 2
    # The host's own backend stays the CPU: libtpu is loaded only as the compiler of the topology.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from motionaura_jax.parallel.mesh import MeshError
    from motionaura_jax.train import aot

    try:
        reports = [aot.compile_train(config, args.topology, mfu=args.mfu, max_hbm_fraction=args.max_hbm,
                                     count_flops=not args.no_flops)]  # fmt: skip
        if args.sample:
            reports.append(
                aot.compile_sample(
                    config,
                    args.topology,
                    batch_size=args.sample_batch,
                    mfu=args.mfu,
                    max_hbm_fraction=args.max_hbm,
                    count_flops=not args.no_flops,
                )
            )
    except (aot.TopologyError, MeshError, ValueError) as error:
        print(f"motionaura compile: {error}", file=sys.stderr)
        return 2
    for report in reports:
        report["config"] = args.config
    table = aot.to_markdown(reports)
    print(table, end="")
    if args.out:
        from motionaura_jax import atomic

        stem = args.out[:-5] if args.out.endswith(".json") else args.out
        atomic.write_text(stem + ".json", aot.to_json(reports) + "\n")
        atomic.write_text(stem + ".md", table)
        print(f"wrote {stem}.json and {stem}.md")
    status = 0
    for report in reports:
        try:
            aot.check_fits(report, config)
        except aot.DoesNotFit as error:
            print(f"motionaura compile: {error}", file=sys.stderr)
            status = 1
    return status
