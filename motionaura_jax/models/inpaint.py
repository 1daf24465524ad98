"""The trainable side of sketch-guided inpainting (paper_notes §5): what a fine-tune of the frozen
text-to-video denoiser adds and trains, as one Linen module whose `init` builds exactly that tree.

    trainables = InpaintTrainables(denoiser_cfg, sketch_channels=(16, 32, 64), finetune="lora", lora_rank=4)
    params = trainables.init(rng, sketch_bhw1)["params"]
        # {"sketch": conv encoder + MLP, "segments": {"embedding": (3, D)}, "lora": adapters}  (finetune="lora")
        # {"sketch", "segments", "denoiser": a full copy of the denoiser's params}            (finetune="full")
    tokens_bsd = trainables.apply({"params": params}, sketch_bhw1)       # sketch tokens at the denoiser width
    logits = SpectralDenoiser(denoiser_cfg).apply(
        {"params": denoiser_params(params, base_params, lora_config)},
        z_t, t_b, fps_b, text, mask, context_ids_bthw=z_m, extra_tokens_bsd=tokens_bsd)

With `sketch_encoder="siglip"` the sketch goes through the paper's frozen SigLIP vision tower (its params are
passed beside the trainable tree, never in it) and only the MLP projector under "sketch" trains:

    tokens_bsd = trainables.apply({"params": params}, sketch_bhw1, siglip_params=tower_params)

The frozen parts (the text-to-video run's denoiser params, the tokenizer, the text encoder, the SigLIP tower)
are never in this tree: a train state holds only what trains, and `runs.load_run` of an inpaint run restores only this tree
(the base run is named in the config and loaded on its own). The LoRA adapters are `models/lora.py`'s
(targets, rank, logical names), created under "lora" from the abstract shapes of the base denoiser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from motionaura_jax.models import lora as lora_lib
from motionaura_jax.models.denoiser import SegmentEmbeddings, SpectralDenoiser, example_inputs
from motionaura_jax.models.sketch import (
    ConvSketchEncoder,
    SiglipVisionConfig,
    SiglipVisionTower,
    SketchProjector,
    siglip_config_from_hf,
    sketch_to_pixels,
)
from motionaura_jax.models.text.loading import read_config_json

FINETUNES = ("lora", "full")
SKETCH_ENCODERS = ("conv", "siglip")


def lora_config_for(
    denoiser_cfg: ml_collections.ConfigDict, rank: int = 0, alpha: float = 0.0, targets: str = ""
) -> lora_lib.LoraConfig:
    """The adapters' config: `rank` 0 = `lora.default_rank(width)`; `alpha` 0 = rank (scale 1); `targets` ""
    = `lora.DEFAULT_TARGETS` (a path regex otherwise)."""
    fields: dict[str, Any] = {}
    if rank:
        fields["rank"] = int(rank)
    if alpha:
        fields["alpha"] = float(alpha)
    if targets:
        fields["targets"] = str(targets)
    return lora_lib.denoiser_lora_config(denoiser_cfg, **fields)


def inpaint_lora_config(
    denoiser_cfg: ml_collections.ConfigDict, inpaint_cfg: ml_collections.ConfigDict
) -> lora_lib.LoraConfig | None:
    """The adapters of an inpaint config (`config.inpaint`), or None for a full fine-tune."""
    i = inpaint_cfg
    if str(i.finetune) != "lora":
        return None
    return lora_config_for(denoiser_cfg, int(i.lora_rank), float(i.lora_alpha), str(i.lora_targets))


def abstract_denoiser_params(denoiser_cfg: ml_collections.ConfigDict, grid_thw=(1, 2, 2)) -> Any:
    """Boxed ShapeDtypeStructs of a text-to-video denoiser's params (nothing allocated). Only a global
    filter's weights depend on the grid, so pass the real grid for spectral_mode=global_filter."""
    inputs = example_inputs(denoiser_cfg, 1, tuple(grid_thw), 2, abstract=True)
    return jax.eval_shape(SpectralDenoiser(denoiser_cfg).init, jax.random.key(0), *inputs)["params"]


class InpaintTrainables(nn.Module):
    """Creates (init) and applies (sketch -> tokens) the trainable parameters of an inpainting fine-tune."""

    denoiser_config: ml_collections.ConfigDict
    grid_thw: tuple[int, int, int]
    sketch_channels: tuple[int, ...] = (16, 32, 64)
    finetune: str = "lora"
    lora_rank: int = 0
    lora_alpha: float = 0.0
    lora_targets: str = ""  # "": lora.DEFAULT_TARGETS
    sketch_encoder: str = "conv"
    siglip: SiglipVisionConfig | None = None  # the frozen tower's config (sketch_encoder="siglip")
    context_fusion: str = "sequence"  # "channel": the segments also hold the context projection
    sketch_grid: bool = False  # the segments also hold the sketch's frame-0 projection

    @nn.compact
    def __call__(self, sketch_bhw1: jax.Array, siglip_params: Any | None = None) -> jax.Array:
        cfg = self.denoiser_config
        if self.finetune not in FINETUNES:
            raise ValueError(f"inpaint finetune={self.finetune!r}: use one of {', '.join(FINETUNES)}")
        if self.sketch_encoder not in SKETCH_ENCODERS:
            raise ValueError(
                f"inpaint sketch_encoder={self.sketch_encoder!r}: use one of {', '.join(SKETCH_ENCODERS)}"
            )
        SegmentEmbeddings(
            int(cfg.width),
            context_fusion=self.context_fusion == "channel",
            sketch_grid=self.sketch_grid,
            name="segments",
        )()
        if self.finetune == "lora":
            lora_cfg = lora_config_for(cfg, self.lora_rank, self.lora_alpha, self.lora_targets)
            grid = tuple(self.grid_thw)
            self.param(
                "lora", lambda rng: lora_lib.init_lora(rng, abstract_denoiser_params(cfg, grid), lora_cfg)
            )
        else:
            inputs = example_inputs(cfg, 1, tuple(self.grid_thw), 2)
            if self.is_initializing():  # a full copy, overwritten by the base run's values before training
                SpectralDenoiser(cfg, name="denoiser")(*inputs)
        if self.sketch_encoder == "conv":
            return ConvSketchEncoder(int(cfg.width), tuple(self.sketch_channels), name="sketch")(sketch_bhw1)
        return SketchProjector(int(cfg.width), name="sketch")(
            self._siglip_features(sketch_bhw1, siglip_params)
        )

    def _siglip_features(self, sketch_bhw1: jax.Array, siglip_params: Any | None) -> jax.Array:
        tower = self.siglip
        if tower is None:
            raise ValueError("inpaint sketch_encoder='siglip' needs the tower's config (inpaint.siglip_dir)")
        if siglip_params is None:
            if not self.is_initializing():
                raise ValueError("the SigLIP sketch encoder needs the frozen tower's params (siglip_params=)")
            # init builds the projector from the features' shape: the 400M-parameter tower never runs here.
            return jnp.zeros((sketch_bhw1.shape[0], tower.num_patches, tower.hidden_size), jnp.float32)
        pixels = sketch_to_pixels(sketch_bhw1, tower.image_size)
        features = SiglipVisionTower(tower).apply({"params": siglip_params}, pixels)
        return jax.lax.stop_gradient(features)  # frozen: the paper trains the MLP only


def siglip_config_of(inpaint_cfg: ml_collections.ConfigDict) -> SiglipVisionConfig | None:
    """The frozen SigLIP tower's config (from `inpaint.siglip_dir`'s config.json), or None for the conv encoder."""
    if str(inpaint_cfg.sketch_encoder) != "siglip":
        return None
    if not inpaint_cfg.siglip_dir:
        raise ValueError(
            "inpaint.sketch_encoder='siglip' needs inpaint.siglip_dir: a local Hugging Face SigLIP folder "
            "(config.json + safetensors), e.g. --config.inpaint.siglip_dir=/models/siglip-so400m-patch14-384"
        )
    return siglip_config_from_hf(read_config_json(inpaint_cfg.siglip_dir))


def inpaint_denoiser(
    denoiser_cfg: ml_collections.ConfigDict, inpaint_cfg: ml_collections.ConfigDict
) -> SpectralDenoiser:
    """The text-to-video denoiser with the inpaint config's context and sketch switches."""
    i = inpaint_cfg
    return SpectralDenoiser(
        denoiser_cfg,
        context_rope=str(i.context_rope),
        context_mixing=str(i.context_mixing),
        context_fusion=str(i.context_fusion),
        sketch_grid=bool(i.sketch_grid),
    )


def build_trainables(
    denoiser_cfg: ml_collections.ConfigDict, inpaint_cfg: ml_collections.ConfigDict, grid_thw: tuple[int, ...]
) -> InpaintTrainables:
    """The trainables module of an inpaint config (`config.inpaint`)."""
    i = inpaint_cfg
    return InpaintTrainables(
        denoiser_cfg,
        tuple(int(g) for g in grid_thw),
        tuple(i.sketch_channels),
        i.finetune,
        int(i.lora_rank),
        float(i.lora_alpha),
        sketch_encoder=str(i.sketch_encoder),
        siglip=siglip_config_of(i),
        context_fusion=str(i.context_fusion),
        sketch_grid=bool(i.sketch_grid),
        lora_targets=str(i.lora_targets),
    )


def denoiser_params(
    trainable: Mapping[str, Any], base: Mapping[str, Any] | None, lora_cfg: lora_lib.LoraConfig | None
) -> dict[str, Any]:
    """The params the SpectralDenoiser applies with: base + adapters merged (LoRA), or the trained full copy,
    plus the segment embeddings under "inpaint_segments". Differentiable in `trainable`; `base` is only read,
    so a step that never differentiates it leaves it bit-identical."""
    if "lora" in trainable:
        if base is None or lora_cfg is None:
            raise ValueError("LoRA inpainting params need the base denoiser params and the LoRA config")
        params = lora_lib.merge(base, trainable["lora"], lora_cfg)
    elif "denoiser" in trainable:
        params = dict(trainable["denoiser"])
    else:
        raise ValueError(
            f"not inpainting params: top-level keys {sorted(trainable)} (expected lora or denoiser)"
        )
    return {**params, "inpaint_segments": trainable["segments"]}


def sketch_tokens(
    module: InpaintTrainables,
    trainable: Mapping[str, Any],
    sketch_bhw1: jax.Array,
    siglip_params: Any | None = None,
) -> jax.Array:
    """(B, S', width) sketch tokens (conv encoder, or frozen SigLIP + MLP) of `trainable`'s "sketch" params."""
    return module.apply({"params": trainable}, jnp.asarray(sketch_bhw1), siglip_params)
