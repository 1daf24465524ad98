"""The sketch-guided inpainting stage on the generic loop: a LoRA fine-tune of the frozen text-to-video
denoiser on [z_t ; z_m ; sketch tokens] (paper_notes §5; the choices are listed in experiments/inpaint.py).

    motionaura train --config=experiments/inpaint.py:tiny --workdir=runs/inpaint_tiny \
        --config.inpaint.t2v_workdir=runs/t2v_tiny

The base run (`inpaint.t2v_workdir`) is loaded with `runs.load_run` (parameters only) and never trained: its
denoiser config, diffusion config, tokenizer and text encoder are copied into this config on first use, so the
saved config.json rebuilds the inpainter (`pipelines.inpaint.Inpainter.load(workdir)`).

Data are a token cache (`data/token_cache.py`) of clips with object masks and sketches, built once with the
frozen tokenizer: ids of the clip (target), ids of the clip with its dilated object mask blacked out
(context), the token region the mask covers, the sketch, the caption's embedding.

The train state holds what trains, `params` = {"lora" (or "denoiser" for finetune="full"), "segments",
"sketch"} with its AdamW state, and the frozen base params in `base` (an input of every step, returned as
they came: bit-identical). One step: drop the text with p = train.text_drop_prob, draw t and z_t ~ q(z_t|z_0)
on the target ids, run the denoiser on the whole sequence, take the t2v diffusion loss on the target logits.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh

from motionaura_jax import paths, runs
from motionaura_jax.data import token_cache
from motionaura_jax.data.synthetic import caption_without_shape
from motionaura_jax.data.token_cache import TokenCache
from motionaura_jax.diffusion.losses import diffusion_losses, drop_text
from motionaura_jax.diffusion.schedule import schedule_from_config
from motionaura_jax.models import sketch as sketch_lib
from motionaura_jax.models.denoiser import SpectralDenoiser
from motionaura_jax.models.inpaint import (
    InpaintTrainables,
    abstract_denoiser_params,
    build_trainables,
    denoiser_params,
    inpaint_denoiser,
    inpaint_lora_config,
)
from motionaura_jax.pipelines.inpaint import check_mask_fill, dilate_masks, masked_video, token_region
from motionaura_jax.pipelines.t2v import prompt_encoder
from motionaura_jax.train.state import TrainState, gradient_step, make_optimizer
from motionaura_jax.train.t2v import build_frozen_cache, cache_iterator, noisy_inputs
from motionaura_jax.train.task import Task

log = logging.getLogger("motionaura")


@flax.struct.dataclass
class InpaintState(TrainState):
    """`params` (the trainable tree) and its optimizer state, plus the frozen base denoiser params and, with
    inpaint.sketch_encoder="siglip", the frozen SigLIP tower's params (inputs of every step, never updated)."""

    base: Any = None
    sketch_tower: Any = None


# ------------------------------------------------------------------------------------------------------------
# Config: what the frozen base run fixes


def fill_from_t2v(config: ml_collections.ConfigDict) -> None:
    """Copies the base run's denoiser, diffusion, tokenizer, text encoder, clip geometry and token grid into
    `config` (once: a saved inpaint config already has them)."""
    i = config.inpaint
    if "width" in config.model:
        return
    if not i.t2v_workdir:
        raise ValueError(
            "inpaint needs the frozen text-to-video run: set --config.inpaint.t2v_workdir=T2V_WORKDIR"
        )
    base = runs.read_config(i.t2v_workdir)
    if str(base.task) != "t2v":
        raise ValueError(f"inpaint.t2v_workdir={i.t2v_workdir} holds a {str(base.task)!r} run, not a t2v one")
    steps = runs.checkpoint_steps(i.t2v_workdir)
    if not steps:
        raise ValueError(f"inpaint.t2v_workdir={i.t2v_workdir} has no checkpoint: train the t2v run first")
    i.t2v_workdir = os.fspath(paths.absolute(i.t2v_workdir))
    i.t2v_step = int(steps[0])
    config.model = ml_collections.ConfigDict(base.model.to_dict())
    config.diffusion = ml_collections.ConfigDict(base.diffusion.to_dict())
    for key in ("text_encoder", "text_model_dir", "text_max_length", "text_cache_dir", "grid", "text_len"):
        config.tokens[key] = base.tokens[key]
    config.tokens.tokenizer_workdir = os.fspath(paths.absolute(base.tokens.tokenizer_workdir))
    config.data.frames, config.data.size = int(base.data.frames), int(base.data.size)


def cache_dir(config: ml_collections.ConfigDict) -> epath.Path:
    t = config.tokens
    if t.cache:
        return paths.as_path(t.cache)
    # Captions without their shape word are one more field, and another fill other ids: each such cache gets its
    # own default folder (black, the default fill, keeps the folder caches had before the key).
    suffix = "_noshape" if shape_word_drop(config) else ""
    fill = check_mask_fill(config.inpaint.mask_fill)
    suffix += f"_fill{fill:g}" if fill != -1.0 else ""
    return paths.as_path(config.inpaint.t2v_workdir) / f"inpaint_cache_{t.split}{suffix}"


def extra_fields(
    encode_video, mask_dilate: int, temporal: int, spatial: int, encode_text=None, mask_fill: float = -1.0
):
    """The token cache's inpainting fields of a batch: context_ids (ids of the masked video, its region set to
    `mask_fill`), region (token region of the dilated mask) and sketch (uint8 (H, W)); with `encode_text`, also
    text_noshape and text_noshape_mask (the caption without its shape word, for inpaint.shape_word_drop)."""

    def fields(clips: list[dict[str, Any]], video: np.ndarray) -> dict[str, np.ndarray]:
        if "masks" not in clips[0] or "sketch" not in clips[0]:
            raise ValueError(
                "inpaint data need per-frame object masks and a sketch per clip: use data.source=synthetic "
                "(Moving Shapes), a folder whose videos have clip.mask.mp4/.png and clip.sketch.png sidecars, or a "
                "tfds dataset built with masks, with data.with_masks=True"
            )
        pad = len(video) - len(clips)
        masks = np.stack([c["masks"] for c in clips] + [clips[-1]["masks"]] * pad)
        sketch = np.stack([c["sketch"] for c in clips] + [clips[-1]["sketch"]] * pad)
        region_px = dilate_masks(masks, mask_dilate)
        out = {
            "context_ids": np.asarray(encode_video(masked_video(video, region_px, mask_fill)), np.int32),
            "region": token_region(region_px, temporal, spatial),
            "sketch": sketch.astype(np.uint8),
        }
        if encode_text is not None:
            try:
                captions = [caption_without_shape(c["caption"]) for c in clips]
            except ValueError as error:
                raise ValueError(
                    f"inpaint.shape_word_drop > 0 needs Moving Shapes captions: {error}"
                ) from None
            text, text_mask = encode_text(captions + [captions[-1]] * pad)
            out["text_noshape"], out["text_noshape_mask"] = (
                np.asarray(text, np.float32),
                np.asarray(text_mask),
            )
        return out

    return fields


def shape_word_drop(config: ml_collections.ConfigDict) -> float:
    """config.inpaint.shape_word_drop, checked."""
    p = float(config.inpaint.shape_word_drop)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"inpaint.shape_word_drop={p}: a probability in [0, 1]")
    return p


def ensure_inpaint_cache(config: ml_collections.ConfigDict) -> TokenCache:
    """The inpainting token cache of this config, built first when missing or unfinished (one process)."""
    folder, fill = cache_dir(config), check_mask_fill(config.inpaint.mask_fill)
    if not token_cache.is_complete(folder):
        t, dilate = config.tokens, int(config.inpaint.mask_dilate)
        encode_text = prompt_encoder(config, int(t.text_len) or None) if shape_word_drop(config) else None

        def fields(tokenizer):
            temporal, spatial = tokenizer.compression
            return extra_fields(tokenizer.encode, dilate, temporal, spatial, encode_text, fill)

        build_frozen_cache(
            config,
            folder,
            text_max_length=int(t.text_len) or None,
            identity={
                "text_len": int(t.text_len),
                "inpaint_fields": "context_ids,region,sketch"
                + (",text_noshape" if shape_word_drop(config) else ""),
                "mask_dilate": dilate,
                "mask_fill": fill,
            },
            extra_fields=fields,
        )
    cache = TokenCache(folder)
    spec = json.loads((folder / token_cache.SPEC_FILE).read_text())
    # Caches from before inpaint.mask_fill blacked the region out.
    built = {"mask_dilate": int(spec["mask_dilate"]), "mask_fill": float(spec.get("mask_fill", -1.0))}
    wanted = {"mask_dilate": int(config.inpaint.mask_dilate), "mask_fill": fill}
    if built != wanted:
        raise ValueError(
            f"inpaint cache {folder} was built with {built}, the config asks for {wanted} (inpaint.*); set "
            "tokens.cache to another folder"
        )
    if bool(shape_word_drop(config)) != ("text_noshape" in cache.extras):
        raise ValueError(
            f"inpaint cache {folder} {'lacks' if shape_word_drop(config) else 'has'} the captions without their "
            f"shape word, but inpaint.shape_word_drop={shape_word_drop(config)}; set tokens.cache to another folder"
        )
    grid = tuple(int(g) for g in config.tokens.grid)
    if cache.grid != grid:
        raise ValueError(
            f"inpaint cache {folder} has token grid {cache.grid} but the base t2v run was trained on {grid}; "
            "use clips of the t2v run's frames and size (data.frames, data.size)"
        )
    return cache


# ------------------------------------------------------------------------------------------------------------
# Model pieces and the step


def build_models(config: ml_collections.ConfigDict) -> tuple[SpectralDenoiser, InpaintTrainables, Any]:
    """(denoiser with the context switches, the trainables module, the LoRA config or None)."""
    i = config.inpaint
    model = inpaint_denoiser(config.model, i)
    trainables = build_trainables(config.model, i, tuple(config.tokens.grid))
    return model, trainables, inpaint_lora_config(config.model, i)


def region_border(region_bthw: jax.Array) -> jax.Array:
    """(B, T', H', W') bool: the region's tokens with a spatial 4-neighbour outside it, the cells where the
    dilated mask ends inside a token cell and the object must stop short of its edge. The frame's edge does
    not count (no pixel lies beyond it)."""
    region = region_bthw.astype(bool)
    padded = jnp.pad(region, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=True)
    interior = (
        padded[:, :, :-2, 1:-1] & padded[:, :, 2:, 1:-1] & padded[:, :, 1:-1, :-2] & padded[:, :, 1:-1, 2:]
    )
    return region & ~interior


def border_weight(config: ml_collections.ConfigDict) -> float:
    """config.inpaint.border_weight, checked."""
    weight = float(config.inpaint.border_weight)
    if weight <= 0:
        raise ValueError(
            f"inpaint.border_weight={weight}: a positive loss weight (1: the border as any token)"
        )
    return weight


def make_inpaint_step(config: ml_collections.ConfigDict, model, trainables, lora_cfg, schedule, tx):
    drop_prob = float(config.train.text_drop_prob)
    border = border_weight(config)
    region_only = config.inpaint.corrupt_region == "masked"
    if config.inpaint.corrupt_region not in ("all", "masked"):
        raise ValueError(f"inpaint.corrupt_region={config.inpaint.corrupt_region!r}: use all or masked")

    drop_shape = shape_word_drop(config)
    guide_sketch = bool(config.inpaint.sketch_guidance)

    def train_step(state: InpaintState, batch: dict, rng: jax.Array, step: jax.Array):
        if drop_shape > 0:  # some captions without their shape word: the sketch must say it
            rng, rng_shape = jax.random.split(rng)
            dropped = jax.random.bernoulli(rng_shape, drop_shape, (batch["text"].shape[0],))
            batch = {
                **batch,
                "text": jnp.where(dropped[:, None, None], batch["text_noshape"], batch["text"]),
                "text_mask": jnp.where(dropped[:, None], batch["text_noshape_mask"], batch["text_mask"]),
            }
        dropped_b = None
        if guide_sketch:  # the text and the sketch dropped together: guidance's unconditional branch
            rng, rng_text = jax.random.split(rng)
            text, text_mask, dropped_b = drop_text(rng_text, batch["text"], batch["text_mask"], drop_prob)
            batch = {**batch, "text": text, "text_mask": text_mask}
        ids, z_t, t_b, text, text_mask, rng_dropout = noisy_inputs(
            batch, rng, schedule, 0.0 if guide_sketch else drop_prob
        )
        if region_only:  # the known tokens are given clean, as `--paste_every_step` inference gives them
            z_t = jnp.where(batch["region"], z_t, ids)

        inputs = (z_t, t_b, batch["fps"], text, text_mask)
        context_ids = batch["context_ids"].astype(jnp.int32)

        def loss_fn(trainable):
            tokens = trainables.apply({"params": trainable}, batch["sketch"][..., None], state.sketch_tower)
            if dropped_b is not None:
                tokens = jnp.where(dropped_b[:, None, None], 0.0, tokens)
            params = denoiser_params(trainable, state.base, lora_cfg)
            logits = model.apply(
                {"params": params},
                *inputs,
                deterministic=False,
                rngs={"dropout": rng_dropout},
                context_ids_bthw=context_ids,
                extra_tokens_bsd=tokens,
            )
            token_weight = None
            if border != 1.0:
                token_weight = jnp.where(region_border(batch["region"]), border, 1.0)
            metrics = diffusion_losses(schedule, logits, ids, z_t, t_b, config.diffusion, token_weight)
            return metrics["loss"], metrics

        return gradient_step(state, tx, loss_fn)

    return train_step


def _boxed_like(boxed: Any, values: Any) -> Any:
    """`values` (plain arrays) in the logical-name boxes of `boxed` (so the loop shards them like those)."""
    return jax.tree.map(
        lambda box, x: box.replace_boxed(x),
        boxed,
        values,
        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
    )


def make_task(config: ml_collections.ConfigDict, mesh: Mesh) -> Task:
    fill_from_t2v(config)
    i = config.inpaint
    model, trainables, lora_cfg = build_models(config)
    schedule = schedule_from_config(config.diffusion, int(config.model.vocab_size))
    tx = make_optimizer(config.train)
    grid = tuple(int(g) for g in config.tokens.grid)
    size = int(config.data.size)
    base_run = runs.load_run(i.t2v_workdir, task="t2v", step=int(i.t2v_step) or None, mesh=mesh)
    boxed_base = _boxed_like(abstract_denoiser_params(config.model, grid), base_run.params)
    boxed_tower = None
    if trainables.siglip is not None:  # the paper's frozen SigLIP tower, loaded once, leaf by leaf
        _, tower = sketch_lib.load_siglip_vision(i.siglip_dir, mesh=mesh, progress=False)
        boxed_tower = _boxed_like(sketch_lib.abstract_params(trainables.siglip), tower["params"])

    def init_state(rng: jax.Array) -> InpaintState:
        params = trainables.init({"params": rng}, jnp.zeros((1, size, size, 1), jnp.uint8))["params"]
        if i.finetune == "full":  # the full copy starts from the base run's weights
            return InpaintState.create(
                {**params, "denoiser": boxed_base}, tx, base=None, sketch_tower=boxed_tower
            )
        return InpaintState.create(params, tx, base=boxed_base, sketch_tower=boxed_tower)

    def make_data(process_index: int, process_count: int) -> token_cache.TokenCacheIterator:
        return cache_iterator(ensure_inpaint_cache(config), config, process_index, process_count)

    inpainter: dict[str, Any] = {}

    def text_spec(batch: int, name: str) -> dict[str, jax.ShapeDtypeStruct]:
        if name != "text" and not shape_word_drop(config):
            return {}
        length, dim = int(config.tokens.text_len), int(config.model.text_dim)
        return {
            name: jax.ShapeDtypeStruct((batch, length, dim), jnp.float32),
            f"{name}_mask": jax.ShapeDtypeStruct((batch, length), jnp.bool_),
        }

    def get_inpainter(state: InpaintState):
        from motionaura_jax.pipelines.inpaint import Inpainter
        from motionaura_jax.pipelines.tokenizer import Tokenizer

        if "i" not in inpainter:
            tokenizer = Tokenizer.load(config.tokens.tokenizer_workdir)
            inpainter["i"] = Inpainter(config, base_run.params, tokenizer, state.params, state.sketch_tower)
        inpainter["i"].trainable = state.params  # one inpainter (and its compiled sampler) across steps
        return inpainter["i"]

    def sample_fn(state: InpaintState, step: int, workdir: epath.Path) -> dict[str, np.ndarray]:
        from motionaura_jax.eval.inpaint import write_examples

        out = paths.as_path(workdir) / "samples" / f"step_{step:07d}"
        sheet = write_examples(
            get_inpainter(state), config, out, int(config.sample.num_clips), str(config.sample.split)
        )
        return {"samples/inpaint_sheet": sheet}

    def eval_fn(state: InpaintState, step: int, workdir: epath.Path) -> dict[str, float]:
        from motionaura_jax.eval.inpaint import evaluate

        metrics, _ = evaluate(get_inpainter(state), config, int(config.eval.num_clips))
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

    return Task(
        init_state=init_state,
        train_step=make_inpaint_step(config, model, trainables, lora_cfg, schedule, tx),
        make_data=make_data,
        eval_fn=eval_fn,
        sample_fn=sample_fn,
        params_of=lambda state: state.params,
        batch_spec=lambda batch: {
            **text_spec(batch, "text_noshape"),
            "context_ids": jax.ShapeDtypeStruct((batch, *grid), jnp.int32),
            "region": jax.ShapeDtypeStruct((batch, *grid), jnp.bool_),
            "sketch": jax.ShapeDtypeStruct((batch, size, size), jnp.uint8),
            **text_spec(batch, "text"),
            "ids": jax.ShapeDtypeStruct((batch, *grid), jnp.int32),
            "fps": jax.ShapeDtypeStruct((batch,), jnp.float32),
            "index": jax.ShapeDtypeStruct((batch,), jnp.int32),
        },
    )
