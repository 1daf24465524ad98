"""Sketch-guided video inpainting as an inference pipeline (paper_notes §5): a video, a mask of the region to
redo, a sketch and a caption -> the video with that region regenerated, everything else kept.

    from motionaura_jax.pipelines.inpaint import Inpainter, load_inputs
    inpainter = Inpainter.load("runs/quickstart/inpaint")       # an inpaint run (or a t2v run: no fine-tune)
    inputs = load_inputs("in.mp4", "mask.png", "sketch.png")   # or a box "x0,y0,x1,y1" as the mask
    out = inpainter.inpaint(inputs.video[None], inputs.masks[None], inputs.sketch[None], ["a red circle ..."])
    out["video"]                                                 # uint8 (B, T, H, W, 3)

Steps: the mask is dilated by `inpaint.mask_dilate` pixels; the frozen tokenizer encodes the input video (z_in)
and the masked video (object region blacked out: z_m); the pixel region becomes a token region (a token is
regenerated when any pixel it covers is); the reverse chain runs on [z_t ; z_m ; sketch tokens] with the
fine-tuned denoiser; then the tokens outside the region are pasted back (`inpaint.paste_from`: "input" = z_in,
the tokenizer's own tokens of the unmasked video; "masked" = z_m, the paper's wording) and the ids decoded.
`paste_pixels=True` also copies the input's pixels outside the dilated mask. A t2v run is the "no fine-tune"
arm: the text-to-video model samples the whole grid from the caption alone and only the paste-back keeps the
rest of the video.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from motionaura_jax import runs
from motionaura_jax.configs import inpaint as inpaint_configs
from motionaura_jax.configs import t2v as t2v_configs
from motionaura_jax.data.video_io import contact_sheet, to_uint8
from motionaura_jax.diffusion.sampler import options_from_config, sample
from motionaura_jax.diffusion.schedule import schedule_from_config
from motionaura_jax.models.inpaint import (
    build_trainables,
    denoiser_params,
    inpaint_denoiser,
    inpaint_lora_config,
)
from motionaura_jax.models.sketch import load_siglip_vision
from motionaura_jax.pipelines.t2v import prompt_encoder
from motionaura_jax.pipelines.tokenizer import Tokenizer
from motionaura_jax.runs import Run, RunError

TASKS = ("inpaint", "t2v")
_SAMPLERS: dict[tuple, Any] = {}  # jitted reverse chains, see Inpainter._sampler


class InpaintInputError(ValueError):
    """An input of `motionaura inpaint` that cannot be used; the message names it and the fix."""


# ------------------------------------------------------------------------------------------------------------
# Masks: dilation, blacking out, pixel region -> token region (shared by training data and inference).


def dilate_masks(masks_bthw: np.ndarray, radius: int) -> np.ndarray:
    """Per-frame binary dilation by a (2r+1)² square (bool in, bool out)."""
    masks = np.asarray(masks_bthw, bool)
    if radius <= 0:
        return masks
    h, w = masks.shape[-2:]
    padded = np.pad(masks, [(0, 0)] * (masks.ndim - 2) + [(radius, radius), (radius, radius)])
    out = np.zeros_like(masks)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[..., dy : dy + h, dx : dx + w]
    return out


def masked_video(video_bthwc: np.ndarray, masks_bthw: np.ndarray, fill: float = -1.0) -> np.ndarray:
    """The video in [-1, 1] with the masked pixels set to `fill` (-1 black, 0 mid-grey)."""
    return np.where(np.asarray(masks_bthw, bool)[..., None], fill, video_bthwc).astype(np.float32)


def check_mask_fill(fill: float) -> float:
    """`inpaint.mask_fill` as a float, or a clear error when it is not a pixel value in [-1, 1]."""
    fill = float(fill)
    if not -1.0 <= fill <= 1.0:
        raise ValueError(f"inpaint.mask_fill={fill}: a pixel value in [-1, 1] (-1 black, 0 mid-grey)")
    return fill


def token_region(masks_bthw: np.ndarray, temporal: int, spatial: int) -> np.ndarray:
    """(B, T', H', W') bool: tokens covering any masked pixel. Latent frame 0 is frame 0, latent frame i >= 1
    frames 1 + temporal·(i-1) ... temporal·i (the causal tokenizer's grouping)."""
    masks = np.asarray(masks_bthw, bool)
    b, t, h, w = masks.shape
    if (t - 1) % temporal or h % spatial or w % spatial:
        raise ValueError(
            f"mask {masks.shape[1:]} does not fit the tokenizer's {temporal}x{spatial} compression"
        )
    groups = [masks[:, :1]] + [
        masks[:, 1 + temporal * i : 1 + temporal * (i + 1)] for i in range((t - 1) // temporal)
    ]
    per_latent = np.stack([g.any(axis=1) for g in groups], axis=1)  # (B, T', H, W)
    return per_latent.reshape(b, len(groups), h // spatial, spatial, w // spatial, spatial).any(axis=(3, 5))


def token_footprint(region_bthw: np.ndarray, temporal: int, spatial: int, frames: int) -> np.ndarray:
    """(B, T, H, W) bool: the pixels of the tokens in a token region (`token_region`'s grouping inverted): what
    the decoder redraws from regenerated tokens. It covers the pixel region the token region was made from."""
    region = np.asarray(region_bthw, bool)
    latent_of_frame = np.array([0] + [1 + (f - 1) // temporal for f in range(1, frames)])
    return region[:, latent_of_frame].repeat(spatial, axis=2).repeat(spatial, axis=3)


# ------------------------------------------------------------------------------------------------------------
# Reading the user's inputs (every failure is an InpaintInputError naming the input and the fix).


@dataclasses.dataclass
class InpaintInputs:
    video: np.ndarray  # uint8 (T, H, W, 3)
    masks: np.ndarray  # bool (T, H, W)
    sketch: np.ndarray  # uint8 (H, W), 255 = line
    fps: float


_BOX = re.compile(r"^\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*$")


def _read_image(path: str, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise InpaintInputError(f"{what}={path}: no such file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InpaintInputError(
            f"{what}={path} is not an image ({type(error).__name__}); give a PNG (white on black)"
        ) from error


def _resize(image_hw: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image_hw.shape == size_hw:
        return image_hw
    return np.asarray(Image.fromarray(image_hw).resize((size_hw[1], size_hw[0]), Image.NEAREST))


def load_mask(spec: str, frames: int, size_hw: tuple[int, int]) -> np.ndarray:
    """bool (T, H, W) from a box "x0,y0,x1,y1" (pixels, x1/y1 exclusive), a PNG (every frame) or a video."""
    h, w = size_hw
    box = _BOX.match(spec)
    if box:
        x0, y0, x1, y1 = (int(v) for v in box.groups())
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise InpaintInputError(
                f"--mask={spec}: the box must satisfy 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} (the video "
                f"is {w}x{h}); give x0,y0,x1,y1 inside the frame"
            )
        masks = np.zeros((frames, h, w), bool)
        masks[:, y0:y1, x0:x1] = True
        return masks
    from motionaura_jax.data.video_io import VIDEO_EXTENSIONS, VideoReadError, read_video

    if os.path.splitext(spec)[1].lower() in VIDEO_EXTENSIONS:
        try:
            video, _ = read_video(spec)
        except (VideoReadError, OSError) as error:
            raise InpaintInputError(f"--mask={spec}: cannot read the mask video ({error})") from error
        masks = video.mean(axis=-1) >= 128
        if masks.shape != (frames, h, w):
            raise InpaintInputError(
                f"--mask={spec} is a {masks.shape[2]}x{masks.shape[1]} video of {masks.shape[0]} frames but "
                f"--video is {w}x{h} with {frames} frames; give a mask video of the same size and length (or "
                "a PNG for every frame, or a box x0,y0,x1,y1)"
            )
        return masks
    image = _read_image(spec, "--mask")
    if image.shape != (h, w):
        raise InpaintInputError(
            f"--mask={spec} is {image.shape[1]}x{image.shape[0]} but --video is {w}x{h}; give a mask of the "
            "video's size (white = the region to redo)"
        )
    return np.repeat((image >= 128)[None], frames, axis=0)


def load_sketch(path: str, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) in {0, 255}, 255 = line, resized (nearest) to the video's size. A sketch drawn dark on
    light is inverted (lines are the minority of pixels)."""
    from motionaura_jax.data.video_folder import sketch_lines

    return sketch_lines(_resize(_read_image(path, "--sketch"), size_hw))


def load_inputs(video: str, mask: str, sketch: str) -> InpaintInputs:
    """The video, its mask and the sketch, checked against each other."""
    from motionaura_jax.data.video_io import VideoReadError, read_video

    try:
        frames, fps = read_video(video)
    except (VideoReadError, OSError) as error:
        raise InpaintInputError(f"--video={video}: cannot read it ({error})") from error
    t, h, w, _ = frames.shape
    masks = load_mask(mask, t, (h, w))
    if not masks.any():
        raise InpaintInputError(
            f"--mask={mask} is empty (no pixel >= 128): nothing to inpaint; mark the region to redo in white"
        )
    return InpaintInputs(frames, masks, load_sketch(sketch, (h, w)), float(fps))


def check_run(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config of an inpaint or t2v run, or an InpaintInputError naming the run and the fix (cheap: reads
    config.json only)."""
    try:
        config = runs.read_config(workdir)
    except RunError as error:
        raise InpaintInputError(f"--ckpt={workdir}: {error}") from error
    if str(config.task) not in TASKS:
        raise InpaintInputError(
            f"--ckpt={workdir} holds a {str(config.task)!r} run, not an inpaint or t2v run; pass an inpaint "
            "workdir (motionaura train --config=experiments/inpaint.py:...) or a t2v workdir (no fine-tune)"
        )
    return config


def tokenizer_compression(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(temporal, spatial) compression of the run's tokenizer, from its config.json (nothing loaded)."""
    from motionaura_jax.models.vqvae import compression

    try:
        return compression(runs.read_config(config.tokens.tokenizer_workdir).model)
    except RunError as error:
        raise InpaintInputError(f"--ckpt: its tokenizer cannot be read ({error})") from error


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """A uint8 (H, W, 3) image as PNG, atomically (local path or URL)."""
    from PIL import Image

    from motionaura_jax import paths
    from motionaura_jax.atomic import atomic_path

    with atomic_path(paths.as_path(path)) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def check_video(inputs: InpaintInputs, config: ml_collections.ConfigDict, temporal: int) -> None:
    """The video must have the run's frame size and a length the causal tokenizer takes (1 + temporal·k)."""
    size = int(config.data.size)
    t, h, w, _ = inputs.video.shape
    if (h, w) != (size, size):
        raise InpaintInputError(
            f"--video is {w}x{h} but the run was trained on {size}x{size} clips; resize the video (and its mask)"
        )
    if (t - 1) % temporal:
        raise InpaintInputError(
            f"--video has {t} frames; the tokenizer takes 1 + {temporal}k frames (e.g. {int(config.data.frames)}):"
            " trim or pad the video"
        )


# ------------------------------------------------------------------------------------------------------------
# The inpainter


class Inpainter:
    """Video + mask + sketch + caption -> inpainted video, with an inpaint run (or a t2v run: no fine-tune)."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        base_params: Any,
        tokenizer: Tokenizer,
        trainable: Any | None = None,
        sketch_tower: Any | None = None,
    ):
        """`sketch_tower`: the frozen SigLIP tower's params (sketch_encoder="siglip"); None loads them from
        inpaint.siglip_dir."""
        self.config, self.base, self.trainable, self.tokenizer = config, base_params, trainable, tokenizer
        self.fine_tuned = trainable is not None
        # A t2v run (the no-fine-tune arm) masks and pastes back with the inpaint stage's defaults.
        i = config.inpaint if "inpaint" in config else inpaint_configs.get_config().inpaint
        self.model = inpaint_denoiser(config.model, i)
        self.schedule = schedule_from_config(config.diffusion, int(config.model.vocab_size))
        self.mask_dilate = int(i.mask_dilate)
        self.mask_fill = check_mask_fill(i.mask_fill)
        self.paste_from = str(i.paste_from)
        if self.paste_from not in ("input", "masked"):
            raise ValueError(f"inpaint.paste_from={self.paste_from!r}: use input or masked")
        self.sketch_tower = sketch_tower
        if self.fine_tuned:
            self.trainables = build_trainables(config.model, i, tuple(config.tokens.grid))
            if self.trainables.siglip is not None and sketch_tower is None:
                _, tower = load_siglip_vision(i.siglip_dir, progress=False)
                self.sketch_tower = tower["params"]
            self.lora_cfg = inpaint_lora_config(config.model, i)

    @classmethod
    def from_run(cls, run: Run, tokenizer: Tokenizer | None = None) -> Inpainter:
        config = run.config
        if run.task == "t2v":
            return cls(config, run.params, tokenizer or Tokenizer.load(config.tokens.tokenizer_workdir))
        if run.task != "inpaint":
            raise RunError(f"{run.workdir} holds a {run.task!r} run, not an inpaint or t2v run")
        base = None
        if config.inpaint.finetune == "lora":
            base = runs.load_run(config.inpaint.t2v_workdir, task="t2v", mesh=run.mesh).params
        tokenizer = tokenizer or Tokenizer.load(config.tokens.tokenizer_workdir)
        return cls(config, base, tokenizer, run.params)

    @classmethod
    def load(cls, workdir: str | os.PathLike, **kwargs) -> Inpainter:
        run = runs.load_run(workdir, **kwargs)
        if run.task not in TASKS:
            raise RunError(f"{workdir} holds a {run.task!r} run, not an inpaint or t2v run")
        return cls.from_run(run)

    def _sampler(self, num_steps: int, guidance: float | None, temperature: float, grid: tuple, init: bool):
        # Keyed by the config too, and shared by every Inpainter of this process: the jitted chain depends on
        # nothing else, so loading the same run again (eval after a command, a train hook) compiles nothing.
        key = (self.config.to_json(), self.fine_tuned, num_steps, guidance, temperature, grid, init)
        options = sampler_options(self.config.sample)
        if key in _SAMPLERS:
            return _SAMPLERS[key]
        model, schedule, fine_tuned = self.model, self.schedule, self.fine_tuned
        trainables, lora_cfg = (self.trainables, self.lora_cfg) if fine_tuned else (None, None)
        guide_sketch = fine_tuned and bool(self.config.inpaint.sketch_guidance)

        def run(trainable, base, tower, rng, text, mask, fps, context, sketch, init_ids):
            if fine_tuned:
                params = denoiser_params(trainable, base, lora_cfg)
                tokens = trainables.apply({"params": trainable}, sketch, tower)
            else:
                params = base
            batch = text.shape[0]

            def denoise(ids, t_b, fps_b, text_bld, mask_bl):
                if not fine_tuned:
                    return model.apply({"params": params}, ids, t_b, fps_b, text_bld, mask_bl)
                reps = ids.shape[0] // batch  # 2 under guidance: [conditional ; unconditional]
                sketch_tokens = [tokens] * reps
                if guide_sketch and reps == 2:  # the unconditional branch without the sketch, as trained
                    sketch_tokens[1] = jnp.zeros_like(tokens)
                return model.apply(
                    {"params": params},
                    ids,
                    t_b,
                    fps_b,
                    text_bld,
                    mask_bl,
                    context_ids_bthw=jnp.concatenate([context] * reps),
                    extra_tokens_bsd=jnp.concatenate(sketch_tokens),
                )

            return sample(
                options["method"],
                denoise,
                schedule,
                rng,
                grid_thw=grid,
                text_bld=text,
                text_mask_bl=mask,
                fps_b=fps,
                num_steps=num_steps,
                guidance_scale=guidance,
                temperature=temperature,
                init_ids=init_ids if init else None,
                **{k: v for k, v in options.items() if k != "method"},
            )

        _SAMPLERS[key] = jax.jit(run)
        return _SAMPLERS[key]

    def inpaint(
        self,
        video_bthwc: np.ndarray,
        masks_bthw: np.ndarray,
        sketch_bhw: np.ndarray,
        prompts: list[str],
        *,
        num_steps: int = 0,
        guidance_scale: float | None = None,
        temperature: float = 0.0,
        fps: float = 0.0,
        seed: int = 0,
        paste_pixels: bool = False,
        paste_every_step: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """{"video" uint8 (B,T,H,W,3), "ids", "source_ids" (z_in), "context_ids" (z_m), "region" (token),
        "pixel_region" (dilated)}; 0 / None arguments take the run's `sample.*` values; a negative guidance
        scale turns guidance off.
        `paste_every_step` (None: the run's `sample.paste_every_step`, False for a t2v run) starts the chain from
        the known tokens revealed (absorbing diffusion keeps them) instead of from all-[MASK] with paste-back at
        the end only. The sampler (method, refinement, ...) is the run's `sample.*`."""
        s = self.config.sample
        video = np.asarray(video_bthwc)
        if video.dtype != np.uint8:  # float in [-1, 1]
            video = np.clip(np.round((video.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        x = video.astype(np.float32) / 127.5 - 1.0
        temporal, spatial = self.tokenizer.compression
        pixel_region = dilate_masks(masks_bthw, self.mask_dilate)
        region = token_region(pixel_region, temporal, spatial)
        source_ids = self.tokenizer.encode(x)
        context_ids = self.tokenizer.encode(masked_video(x, pixel_region, self.mask_fill))
        paste = source_ids if self.paste_from == "input" else context_ids
        text, mask = prompt_encoder(self.config, int(self.config.tokens.text_len) or None)(list(prompts))
        guidance: float | None = float(s.guidance_scale if guidance_scale is None else guidance_scale)
        guidance = None if guidance < 0 else guidance
        if paste_every_step is None:
            paste_every_step = "paste_every_step" in s and bool(s.paste_every_step)  # a t2v run has none
        init = bool(paste_every_step and self.schedule.absorbing)
        init_ids = np.where(region, self.schedule.num_codes, paste).astype(np.int32)
        run = self._sampler(
            int(num_steps or s.num_steps),
            guidance,
            float(temperature or s.temperature),
            region.shape[1:],
            init,
        )
        sketch = np.asarray(sketch_bhw, np.uint8)[..., None]
        ids = run(
            self.trainable,
            self.base,
            self.sketch_tower,
            jax.random.PRNGKey(seed),
            jnp.asarray(text),
            jnp.asarray(mask),
            jnp.full((len(prompts),), fps or float(s.fps), jnp.float32),
            jnp.asarray(context_ids),
            jnp.asarray(sketch),
            jnp.asarray(init_ids),
        )
        ids = np.where(region, np.asarray(ids), paste).astype(np.int32)  # token paste-back
        out = np.stack([to_uint8(v) for v in self.tokenizer.decode(ids)])
        if paste_pixels:
            out = np.where(pixel_region[..., None], out, video)
        return {
            "video": out,
            "ids": ids,
            "source_ids": source_ids,
            "context_ids": context_ids,
            "region": region,
            "pixel_region": pixel_region,
        }


def sampler_options(sample_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The sampler method and its options from a run's `config.sample` (a t2v or inpaint run's; keys a run
    saved before they existed take their defaults)."""
    merged = t2v_configs.sample_config()
    merged.update({k: sample_cfg[k] for k in merged if k in sample_cfg})
    return options_from_config(merged)


def inpaint_sheet(video: np.ndarray, masks: np.ndarray, sketch: np.ndarray, output: np.ndarray) -> np.ndarray:
    """uint8 contact sheet, one row each: input frames / mask / sketch (first tile) / output frames."""
    t = len(video)
    sketch_row = np.zeros_like(to_uint8(video))
    sketch_row[0] = np.repeat(np.asarray(sketch, np.uint8)[..., None], 3, axis=-1)
    rows = [to_uint8(video), to_uint8(np.asarray(masks, np.uint8) * 255), sketch_row, to_uint8(output)]
    return np.concatenate([contact_sheet(r, columns=t) for r in rows], axis=0)
