"""`motionaura embed-text`: prompts file -> text embeddings .npz.

    motionaura embed-text --prompts=prompts.txt --out=emb.npz                       # MiniLM (shipped)
    motionaura embed-text --encoder=t5 --model-dir=/models/t5-v1_1-xxl --prompts=p.txt --out=emb.npz \
        --max-length=128 --cache-dir=runs/text_cache

The .npz holds `embeddings` float32 (N, max_length, dim), `mask` bool (N, max_length) and `prompts` (N,).
One prompt per line; blank lines are skipped.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

from motionaura_jax import atomic, paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motionaura embed-text",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--encoder", choices=("minilm", "t5"), default="minilm")
    parser.add_argument(
        "--model-dir",
        default=None,
        help="HF folder (config.json + safetensors); default for minilm: the shipped package",
    )
    parser.add_argument("--prompts", required=True, help="text file, one prompt per line")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument(
        "--max-length", type=int, default=None, help="tokens per prompt (default: 64 minilm, 128 t5)"
    )
    parser.add_argument(
        "--tokenizer",
        choices=("auto", "file", "bytes"),
        default="auto",
        help="auto/file: the model folder's tokenizer; bytes: ByT5-style, needs no file",
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", default=None, help="reuse embeddings of prompts already encoded")
    return parser


def _fail(message: str) -> int:
    print(f"motionaura embed-text: {message}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    prompts_path = pathlib.Path(args.prompts)
    if not prompts_path.is_file():
        return _fail(f"prompts file {prompts_path} not found (a text file, one prompt per line)")
    try:
        text = paths.read_utf8(prompts_path)
    except paths.InputFileError as error:
        return _fail(str(error))
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        return _fail(f"{prompts_path} holds no prompts (one per line; blank lines are skipped)")
    try:  # before the encoder loads
        paths.check_output(args.out, "--out")
        if args.cache_dir:
            paths.check_output(args.cache_dir, "--cache-dir", folder=True)
    except paths.OutputPathError as error:
        return _fail(str(error))

    from motionaura_jax.models.text.encode import encode_text
    from motionaura_jax.models.text.loading import ModelFolderError

    start = time.perf_counter()
    try:
        emb_bld, mask_bl = encode_text(
            prompts,
            encoder=args.encoder,
            model_dir=args.model_dir,
            max_length=args.max_length,
            tokenizer=args.tokenizer,
            dtype=args.dtype,
            cache_dir=args.cache_dir,
            batch_size=args.batch_size,
            progress=True,
        )
    except ModelFolderError as err:
        return _fail(str(err))
    out = atomic.write_npz(args.out, embeddings=emb_bld, mask=mask_bl, prompts=np.asarray(prompts))
    print(
        f"embed-text: {len(prompts)} prompts -> {out} embeddings {emb_bld.shape} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0
