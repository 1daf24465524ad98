"""`motionaura bench text`: our Flax T5 encoder vs PyTorch `transformers.T5EncoderModel` on CPU, same run.

For each config a random PyTorch T5 encoder is built, saved with `save_pretrained` (safetensors) and loaded by
our loader, so both sides run the very same weights (the max abs difference of their outputs is printed as a
check). A batch of real sentences, byte-tokenised and padded to `--max-length`, is timed in alternating rounds
(ours, torch, ours, torch, ...) after a warm-up (which includes our compile); the table reports medians.

    motionaura bench text                                    # tiny and t5-v1_1-base sized, random weights
    motionaura bench text --configs=tiny --rounds=9 --batch=32
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

SENTENCES = [
    "a red circle moving left",
    "a green square moving up and a white triangle moving down",
    "The quick brown fox jumps over the lazy dog.",
    "A cat sits on a sunny windowsill, watching birds in the garden.",
    "Waves crash against the rocky shore at sunset.",
    "stock prices fell sharply today",
    "A busy city street at night, cars and neon lights.",
    "a blue triangle moving right",
]


def _torch_config(name: str):
    import transformers

    from motionaura_jax.models.text.t5 import t5_config

    cfg = t5_config(name)
    hf = transformers.T5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )
    hf._attn_implementation = "eager"
    return hf


def measure(name: str, ids_bl: np.ndarray, mask_bl: np.ndarray, rounds: int, warmup: int) -> dict:
    """One config: both models on the same weights, alternating timed rounds, medians."""
    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    from motionaura_jax.models.text.t5 import load_t5_encoder

    torch.manual_seed(0)
    reference = transformers.T5EncoderModel(_torch_config(name)).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        model, variables = load_t5_encoder(folder, progress=False)
    forward = jax.jit(model.apply)
    ids_j, mask_j = jnp.asarray(ids_bl), jnp.asarray(mask_bl)
    ids_t, mask_t = torch.from_numpy(ids_bl.astype(np.int64)), torch.from_numpy(mask_bl.astype(np.int64))

    def ours():
        return forward(variables, ids_j, mask_j).block_until_ready()

    def theirs():
        with torch.inference_mode():
            return reference(input_ids=ids_t, attention_mask=mask_t).last_hidden_state

    start = time.perf_counter()
    out_ours = np.asarray(ours())
    compile_s = time.perf_counter() - start
    out_theirs = theirs().numpy()
    for _ in range(warmup):
        ours()
        theirs()
    times = {"ours": [], "torch": []}
    for _ in range(rounds):
        for key, fn in (("ours", ours), ("torch", theirs)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    med_ours, med_torch = statistics.median(times["ours"]), statistics.median(times["torch"])
    batch = ids_bl.shape[0]
    return {
        "config": name,
        "params_m": sum(p.numel() for p in reference.parameters()) / 1e6,
        "ours_sps": batch / med_ours,
        "torch_sps": batch / med_torch,
        "ratio": med_torch / med_ours,
        "max_abs_diff": float(np.abs(out_ours - out_theirs).max()),
        "compile_s": compile_s,
    }


def run(
    *,
    configs: Sequence[str] = ("tiny", "t5-v1_1-base"),
    batch: int = 16,
    max_length: int = 64,
    rounds: int = 5,
    warmup: int = 1,
    torch_threads: int = 0,
) -> dict[str, Any]:
    """One row per T5 config (names from T5_CONFIGS), with the settings they were measured at.

    `torch_threads` > 0 sets PyTorch's thread count for the whole process; 0 keeps its default (all cores).
    """
    import torch

    from motionaura_jax.models.text.tokenize import ByteTokenizer

    if torch_threads:
        torch.set_num_threads(torch_threads)
    prompts = [SENTENCES[i % len(SENTENCES)] for i in range(batch)]
    ids_bl, mask_bl = ByteTokenizer(max_length)(prompts)
    rows = [measure(name, ids_bl, mask_bl, rounds, warmup) for name in configs]
    return {"batch": batch, "max_length": max_length, "rounds": rounds, "rows": rows}


def format_table(results: dict[str, Any]) -> str:
    """The results of `run` as a fixed-width table under a header naming the batch and the machine."""
    import torch

    batch, max_length, rounds = results["batch"], results["max_length"], results["rounds"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"T5 encoder, CPU, batch {batch} x {max_length} tokens, median of {rounds} alternating rounds "
        f"(torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}, load average: {load:.1f})",
        f"{'config':<16}{'params':>9}{'ours sent/s':>14}{'torch sent/s':>14}{'ours/torch':>12}"
        f"{'max|diff|':>11}{'compile s':>11}",
    ]
    for r in results["rows"]:
        lines.append(
            f"{r['config']:<16}{r['params_m']:>8.1f}M{r['ours_sps']:>14.1f}{r['torch_sps']:>14.1f}"
            f"{r['ratio']:>11.2f}x{r['max_abs_diff']:>11.1e}{r['compile_s']:>11.1f}"
        )
    return "\n".join(lines)
