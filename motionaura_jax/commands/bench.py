"""`motionaura bench NAME [ARGS ...]`: benchmarks reported as ratios against a peer measured in the same run.

The benchmarks themselves are library functions in motionaura_jax/bench/ (`run(...)` and a formatter); this
file holds their command lines. Flags not given are left out of the call, so each benchmark's keyword
defaults are the only home of its defaults. Each benchmark module is imported only when it is run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from motionaura_jax import atomic


def _parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    # argument_default=SUPPRESS: a flag not given stays out of the namespace (and of the call to `run`).
    return argparse.ArgumentParser(
        prog=f"motionaura bench {name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )


def _parse(
    parser: argparse.ArgumentParser, argv: list[str], lists: dict[str, Callable[[str], Any]] | None = None
) -> dict[str, Any]:
    """The flags given, as keyword arguments; each flag in `lists` is a comma-separated list, converted item
    by item (empty items skipped), and a bad item is a usage error naming it."""
    given = vars(parser.parse_args(argv))
    for key, convert in (lists or {}).items():
        if key in given:
            try:
                given[key] = tuple(convert(item.strip()) for item in given[key].split(",") if item.strip())
            except ValueError as err:
                parser.error(str(err))
    return given


def _data(argv: list[str]) -> int:
    from motionaura_jax.bench import data

    parser = _parser("data", data.__doc__)
    parser.add_argument("--clips", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--threads", help="decode threads to try, comma separated")
    parser.add_argument("--json", help="also write the results to this file")
    kwargs = _parse(parser, argv, {"threads": int})
    json_path = kwargs.pop("json", None)
    text = data.format_results(data.run(**kwargs))
    print(text)
    if json_path:
        atomic.write_text(json_path, text + "\n")
    return 0


def _spectral(argv: list[str]) -> int:
    from motionaura_jax.bench import spectral

    parser = _parser("spectral", spectral.__doc__)
    parser.add_argument("--grids", help="comma-separated latent grids TxHxW (tokens = T*H*W)")
    parser.add_argument(
        "--modes", help=f"comma-separated spectral modes; {spectral.LITERAL} is qkv_fft2 computed literally"
    )
    parser.add_argument("--width", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--text-len", type=int)
    parser.add_argument("--dtype", choices=list(spectral.DTYPES))
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--warmup", type=int)
    kwargs = _parse(parser, argv, {"grids": spectral.parse_grid, "modes": str})
    grids = kwargs.pop("grids", spectral.DEFAULT_GRIDS)
    modes = kwargs.pop("modes", spectral.DEFAULT_MODES)
    try:  # checked before anything compiles, so a bad flag is a usage error and not a traceback
        modes = spectral.check_modes(modes)
        bench = spectral.BlockBench(**kwargs)
    except ValueError as err:
        parser.error(str(err))
    rows = spectral.run(grids=grids, modes=modes, bench=bench)
    print(spectral.format_table(rows, bench))
    return 0


def _denoiser(argv: list[str]) -> int:
    from motionaura_jax.bench import denoiser  # imports PyTorch and diffusers only inside its workers

    parser = _parser("denoiser", denoiser.__doc__)
    parser.add_argument("--grids", help="comma-separated token grids TxHxW (tokens = T*H*W)")
    parser.add_argument("--modes", help="comma-separated spectral modes of ours")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="ours only (no CogVideoX)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--text-len", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--min-round-s", type=float, help="a round times steps until this many seconds pass")
    parser.add_argument("--mem-limit-gb", type=float, help="address-space limit of each worker; 0: none")
    parser.add_argument("--attention-chunk", type=int, help="ours: self-attention query rows per chunk")
    parser.add_argument(
        "--scan-layers", action="store_true", help="ours: blocks as one lax.scan (default unrolled)"
    )
    parser.add_argument(
        "--in-process", dest="isolate", action="store_false", help="no worker processes (no memory figures)"
    )
    parser.add_argument("--json", help="also write the results to this file")
    kwargs = _parse(parser, argv, {"grids": _grid, "modes": str})
    run_kwargs = {k: kwargs.pop(k) for k in ("grids", "modes", "peer", "isolate") if k in kwargs}
    json_path = kwargs.pop("json", None)
    try:  # checked before anything compiles, so a bad flag is a usage error and not a traceback
        denoiser.check_modes(run_kwargs.get("modes", denoiser.DEFAULT_MODES))
        bench = denoiser.DenoiserBench(**kwargs)
    except ValueError as err:
        parser.error(str(err))
    if run_kwargs.get("peer", True):
        try:
            import diffusers  # noqa: F401
            import torch  # noqa: F401
        except ImportError as error:
            print(
                f"motionaura bench denoiser: the peer needs torch and diffusers ({error}); --no-peer skips it"
            )
            return 2
    results = denoiser.run(bench=bench, log=lambda line: print(line, flush=True), **run_kwargs)
    text = denoiser.format_table(results)
    print(text)
    if json_path:
        atomic.write_text(json_path, json.dumps(results, indent=2) + "\n")
    return 0


def _grid(text: str) -> tuple[int, int, int]:
    from motionaura_jax.bench.spectral import parse_grid

    return parse_grid(text)


def _text(argv: list[str]) -> int:
    from motionaura_jax.bench import text  # imports PyTorch only inside its functions

    parser = _parser("text", text.__doc__)
    parser.add_argument("--configs", help="comma-separated names from T5_CONFIGS")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--torch-threads", type=int, help="0: PyTorch's default (all cores)")
    kwargs = _parse(parser, argv, {"configs": str})
    try:
        import torch  # noqa: F401
    except ImportError:
        print("bench text needs PyTorch (the peer): pip install -r requirements-test.txt")
        return 2
    print(text.format_table(text.run(**kwargs)))
    return 0


def _vae(argv: list[str]) -> int:
    from motionaura_jax.bench import vae  # imports PyTorch and diffusers only inside its functions

    parser = _parser("vae", vae.__doc__)
    parser.add_argument("--sizes", help="clip sizes (17 frames each)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--variants")
    parser.add_argument("--out", help="also write the results as JSON")
    kwargs = _parse(parser, argv, {"sizes": int, "variants": str})
    out = kwargs.pop("out", "")
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        print(
            f"motionaura bench vae: the peer needs torch and diffusers ({error}); "
            "pip install -r requirements-test.txt",
            flush=True,
        )
        return 2
    results = vae.run(**kwargs)
    if out:
        atomic.write_text(out, json.dumps(results, indent=2) + "\n")
    return 0


BENCHMARKS: dict[str, Callable[[list[str]], int]] = {
    "data": _data,
    "denoiser": _denoiser,
    "spectral": _spectral,
    "text": _text,
    "vae": _vae,
}


def main(argv: list[str]) -> int:
    names = sorted(BENCHMARKS)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: motionaura bench NAME [ARGS ...]\n\nbenchmarks: " + ", ".join(names))
        return 0
    if argv[0] not in BENCHMARKS:
        print(f"motionaura bench: unknown benchmark {argv[0]!r}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    return int(BENCHMARKS[argv[0]](argv[1:]) or 0)
