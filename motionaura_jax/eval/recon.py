"""Tokenizer reconstruction on held-out clips: encode -> quantize -> decode each clip and report
  psnr, ssim (per frame, averaged; eval/image_metrics.py),
  temporal_l1 (mean |(y_t - y_{t-1}) - (x_t - x_{t-1})| of reconstruction y and clip x: flicker / motion
  error, lower is better),
  codebook_usage (share of the K codes used over all evaluated clips), perplexity (of the code distribution
  over all clips), num_clips,
  colour_kept, shape_kept, direction_kept (Moving Shapes: share of caption objects whose colour / shape /
  direction the pixel judge, eval/judge.py, reads right in the reconstruction), fully_kept (share of
  reconstructions with every object fully right: the judge's all_correct), shape_kept_circle / _square /
  _triangle (shape_kept per captioned shape),
  lpips (when `eval.lpips_weights` names a local weights file; "unavailable" otherwise),
  fvd (reconstructions against their own clips, I3D under eval/fvd.py's pinned protocol, when `eval.fvd` is
  true: the tokenizer's floor for generated-video FVD; clips need >= 16 frames).
Data: the run's own data config, split `eval.split` ("heldout": unseen colour x shape x direction
combinations); point it elsewhere with e.g. `--config.data.source=folder --config.data.path=VIDEOS`
(then the whole folder, split "test": no random crops).

    motionaura eval recon --ckpt=runs/vae --out=runs/vae/recon.json
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from motionaura_jax.atomic import atomic_path
from motionaura_jax.data.synthetic import SHAPES
from motionaura_jax.eval import lpips as lpips_lib
from motionaura_jax.eval.image_metrics import psnr_video, ssim_protocol, ssim_video


def _eval_split(config: ml_collections.ConfigDict) -> str:
    split = config.eval.split
    if config.data.source != "synthetic" and split == "heldout":
        return (
            "test"  # folders and TFDS have no "heldout" combinations; "test" reads them without augmentation
        )
    return split


def _forward(model):
    @jax.jit
    def run(variables, x):
        out = model.apply(variables, x, train=False)
        return jnp.clip(out["recon"], -1.0, 1.0), out["ids"]

    return run


def _iterate(config: ml_collections.ConfigDict, num_clips: int, batch_size: int):
    from motionaura_jax.data.pipeline import make_host_iterator

    it = make_host_iterator(
        config.data,
        batch_size=batch_size,
        split=_eval_split(config),
        seed=0,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
    )
    seen = 0
    for batch in it:
        if seen >= num_clips:
            break
        take = min(batch_size, num_clips - seen)
        seen += take
        yield {k: v[:take] for k, v in batch.items()}


def temporal_l1(recon_bthwc: jax.Array, x_bthwc: jax.Array) -> jax.Array:
    """Per clip: mean |Δt recon - Δt x| (0 for single frames)."""
    if x_bthwc.shape[1] < 2:
        return jnp.zeros(x_bthwc.shape[0])
    d = jnp.diff(recon_bthwc, axis=1) - jnp.diff(x_bthwc, axis=1)
    return jnp.mean(jnp.abs(d), axis=(1, 2, 3, 4))


def evaluate(
    model, variables: dict, config: ml_collections.ConfigDict, num_clips: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (metrics, details). Runs on the clips of `config.eval.split` (see the module doc)."""
    from tqdm.auto import tqdm

    num_clips = int(num_clips or config.eval.num_clips)
    batch_size = max(1, min(int(config.eval.batch_size), num_clips))
    forward = _forward(model)
    k = int(config.model.quantizer.num_codes)
    counts = np.zeros(k, np.int64)
    psnr, ssim, tl1, judged, lpips_values, originals, recons = [], [], [], [], [], [], []
    judge = config.data.source == "synthetic" and bool(config.eval.judge_colours)
    if judge:
        from motionaura_jax.eval.judge import judge_and_score
    lpips_metric = lpips_lib.load_lpips(config.eval.lpips_weights or None, net=config.eval.lpips_net)
    bar = tqdm(total=num_clips, desc="eval recon", leave=False, disable=num_clips <= batch_size)
    for batch in _iterate(config, num_clips, batch_size):
        x = jnp.asarray(batch["video"], jnp.float32)
        recon, ids = forward(variables, x)
        psnr.append(np.asarray(psnr_video(recon, x)))
        ssim.append(np.asarray(ssim_video(recon, x)))
        tl1.append(np.asarray(temporal_l1(recon, x)))
        counts += np.bincount(np.asarray(ids).reshape(-1), minlength=k)
        if judge:
            for video, caption in zip(np.asarray(recon), batch["caption"], strict=True):
                judged.append(judge_and_score(video, str(caption)))
        if lpips_metric is not None:
            lpips_values.append(np.asarray(lpips_metric.video(recon, x)))
        if config.eval.fvd:
            originals.append(np.asarray(x))
            recons.append(np.asarray(recon))
        bar.update(x.shape[0])
    bar.close()
    if not psnr:
        raise ValueError(
            f"eval recon: no clips in split {_eval_split(config)!r} of data.source={config.data.source!r}"
        )
    probs = counts / max(counts.sum(), 1)
    nz = probs[probs > 0]
    metrics = {
        "psnr": float(np.mean(np.concatenate(psnr))),
        "ssim": float(np.mean(np.concatenate(ssim))),
        "temporal_l1": float(np.mean(np.concatenate(tl1))),
        "codebook_usage": float(np.mean(counts > 0)),
        "perplexity": float(np.exp(-np.sum(nz * np.log(nz)))),
        "num_clips": int(sum(len(p) for p in psnr)),
    }
    if judged:
        from motionaura_jax.eval.judge import aggregate

        kept = aggregate(judged)
        for name in ("colour", "shape", "direction"):
            metrics[f"{name}_kept"] = float(kept[name])
        metrics["fully_kept"] = float(kept["all_correct"])
        for shape in SHAPES:
            if f"shape_{shape}" in kept:
                metrics[f"shape_kept_{shape}"] = kept[f"shape_{shape}"]
    metrics["lpips"] = float(np.mean(np.concatenate(lpips_values))) if lpips_values else lpips_lib.UNAVAILABLE
    details = {
        "lpips_protocol": lpips_lib.protocol(lpips_metric),
        "psnr_per_clip": np.concatenate(psnr).tolist(),
        "split": _eval_split(config),
        "codes_used": int(np.sum(counts > 0)),
        "num_codes": k,
    }
    if config.eval.fvd:
        from motionaura_jax.eval.fvd import fvd

        result = fvd(np.concatenate(originals), np.concatenate(recons), progress=len(psnr) > 1)
        metrics["fvd"] = float(result["fvd"])
        details["fvd_protocol"] = result["protocol"]
    return metrics, details


def contact_sheet(videos: list[np.ndarray], frames: int = 6) -> np.ndarray:
    """Rows of `frames` evenly spaced frames per video ([-1, 1] float or uint8) -> one uint8 image."""
    rows = []
    for v in videos:
        v = np.asarray(v)
        if v.dtype != np.uint8:
            v = np.clip((v + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        idx = np.linspace(0, v.shape[0] - 1, min(frames, v.shape[0])).round().astype(int)
        pad = np.full((v.shape[1], 2, 3), 128, np.uint8)
        rows.append(np.concatenate([np.concatenate([v[i], pad], axis=1) for i in idx], axis=1))
    return np.concatenate(rows, axis=0)


def write_contact_sheet(
    model, variables: dict, config: ml_collections.ConfigDict, path: str | os.PathLike
) -> np.ndarray:
    """PNG: for each of `eval.contact_sheet_clips` held-out clips, a row of originals then a row of
    reconstructions. Returns the image (uint8 (H, W, 3))."""
    from PIL import Image

    n = int(config.eval.contact_sheet_clips)
    batch = next(_iterate(config, n, n))
    x = jnp.asarray(batch["video"], jnp.float32)
    recon, _ = _forward(model)(variables, x)
    videos = []
    for a, b in zip(np.asarray(x), np.asarray(recon), strict=True):
        videos += [a, b]
    image = contact_sheet(videos)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return image


def protocol(config: ml_collections.ConfigDict, details: dict[str, Any]) -> dict[str, Any]:
    """How the numbers of `evaluate` were taken, for the report next to them."""
    record = {
        "data": {k: config.data[k] for k in ("source", "path", "frames", "size") if k in config.data},
        "split": details["split"],
        "psnr": "per frame over [-1, 1] (data_range 2), averaged over frames then clips",
        "ssim": ssim_protocol(),
        "temporal_l1": "mean |(recon_t - recon_{t-1}) - (x_t - x_{t-1})| over [-1, 1]",
        "codebook": f"{details['codes_used']} of {details['num_codes']} codes used over all evaluated clips",
        "lpips": details["lpips_protocol"],
        "fvd": details.get("fvd_protocol", "off (set eval.fvd=true; needs clips of >= 16 frames)"),
    }
    if config.data.source == "synthetic" and config.eval.judge_colours:
        record["judge"] = (
            "pixel judge (eval/judge.py) on each reconstruction against its clip's caption: *_kept are fractions "
            "of caption objects with that attribute right, fully_kept the fraction of clips with all of them right"
        )
    return record
