"""Sketch encoders: a binary sketch (B, H, W, 1) -> sketch tokens (B, S', D) appended to the denoiser's
sequence (paper_notes §5.1 step 5).

Two encoders, one output contract:
- `ConvSketchEncoder` (the offline default): a small strided conv stack with a fixed 2D sinusoidal position
  code, then the MLP projector. It has no pretrained weights, so all of it trains.
- `SiglipSketchEncoder` (the paper's): the SigLIP vision tower, our own Linen code (`SiglipVisionTower`)
  loaded from a local Hugging Face folder of safetensors shard by shard with the T5 loader's machinery
  (`text/loading.py`), frozen (stop_gradient; keep its params out of the optimizer with `split_trainable`),
  then the trainable MLP projector.

    tower, variables = load_siglip_vision("/models/siglip-so400m-patch14-384")       # (B,384,384,3) -> (B,729,1152)
    encoder, variables = load_siglip_sketch_encoder(folder, out_dim=1024, rng=key)   # sketches -> (B,729,1024)
    trainable, frozen = split_trainable(variables["params"])                          # {"projector"}, {"tower"}

Sketches may be uint8 {0, 255} (data/synthetic.py), bool or float in [0, 1]; 1 = a line. SigLIP sees them as
black lines on white, normalised as its processor does (mean 0.5, std 0.5: white 1, line -1).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from motionaura_jax.models.attention import sinusoidal_embedding
from motionaura_jax.models.layers import dense, layer_norm, partitioned
from motionaura_jax.models.text.loading import CheckpointReader, TensorSource, load_params, read_config_json
from motionaura_jax.parallel.sharding import DEFAULT_RULES, Rules, constrain, unbox

TOKENS = ("act_batch", "act_len", "act_embed")
FROZEN = ("tower",)  # top-level param groups that never train


def sketch_to_float(sketch_bhw1: jax.Array) -> jax.Array:
    """(B, H, W, 1) uint8 {0,255} / bool / float in [0,1] -> float32 in [0, 1], 1 = line."""
    if sketch_bhw1.ndim != 4 or sketch_bhw1.shape[-1] != 1:
        raise ValueError(
            f"sketch must be (B, H, W, 1), got {sketch_bhw1.shape}; add the channel axis with x[..., None]"
        )
    if sketch_bhw1.dtype == jnp.uint8:
        return sketch_bhw1.astype(jnp.float32) / 255.0
    return sketch_bhw1.astype(jnp.float32)


class SketchProjector(nn.Module):
    """The trainable MLP: Linear(E', hidden) -> GELU -> Linear(hidden, D); hidden defaults to D."""

    out_dim: int
    hidden_dim: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features_bse: jax.Array) -> jax.Array:
        hidden = self.hidden_dim or self.out_dim
        h = dense(hidden, ("embed", "mlp"), "fc_in", dtype=self.dtype)(features_bse.astype(self.dtype))
        h = constrain(nn.gelu(h), ("act_batch", "act_len", "act_mlp"))
        return constrain(dense(self.out_dim, ("mlp", "embed"), "fc_out", dtype=self.dtype)(h), TOKENS)


def position_code_2d(h: int, w: int, dim: int) -> jax.Array:
    """(h*w, dim) fixed sinusoidal code of (row, col): half the channels each, row-major like the tokens."""
    rows, cols = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    half = dim // 2
    code = jnp.concatenate(
        [sinusoidal_embedding(rows.ravel(), half), sinusoidal_embedding(cols.ravel(), dim - half)], axis=-1
    )
    return code


class ConvSketchEncoder(nn.Module):
    """(B, H, W, 1) sketch -> (B, H/2^(n-1) * W/2^(n-1), out_dim) tokens, n = len(channels).

    A 3x3 stem at full resolution, then one 3x3 stride-2 conv per further stage (GELU after each), a
    LayerNorm, the 2D position code, and the `SketchProjector`. 32x32 sketches with the default channels give
    8x8 = 64 tokens."""

    out_dim: int
    channels: tuple[int, ...] = (32, 64, 128)
    hidden_dim: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, sketch_bhw1: jax.Array) -> jax.Array:
        x = sketch_to_float(sketch_bhw1).astype(self.dtype) * 2.0 - 1.0
        for i, features in enumerate(self.channels):
            x = nn.Conv(
                features,
                (3, 3),
                strides=(1, 1) if i == 0 else (2, 2),
                padding="SAME",
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=partitioned(nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")),
                bias_init=partitioned(nn.initializers.zeros, ("conv_out",)),
                name=f"conv_{i}",
            )(x)
            x = nn.gelu(x)
        b, h, w, c = x.shape
        x = layer_norm("norm")(x.reshape(b, h * w, c))
        x = x + position_code_2d(h, w, c)[None]
        return SketchProjector(self.out_dim, self.hidden_dim, self.dtype, name="projector")(x)


# ------------------------------------------------------------------------------------------------------------
# SigLIP vision tower (transformers' SiglipVisionModel up to last_hidden_state; the pooling head is unused).


@dataclasses.dataclass(frozen=True)
class SiglipVisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    dtype: str = "float32"  # activations; norms and softmax always run in float32
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: bool = False

    def replace(self, **changes: Any) -> SiglipVisionConfig:
        return dataclasses.replace(self, **changes)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# The public checkpoints' vision towers; so400m-patch14-384 is the usual SigLIP of video models.
SIGLIP_CONFIGS: dict[str, SiglipVisionConfig] = {
    "tiny": SiglipVisionConfig(32, 48, 2, 4, image_size=32, patch_size=8),
    "siglip-base-patch16-224": SiglipVisionConfig(768, 3072, 12, 12, image_size=224, patch_size=16),
    "siglip-so400m-patch14-384": SiglipVisionConfig(1152, 4304, 27, 16, image_size=384, patch_size=14),
}

_HF_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
)


def siglip_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> SiglipVisionConfig:
    """Our config from a config.json dict: a SiglipVisionModel's, or a full SiglipModel's `vision_config`."""
    if "vision_config" in hf:
        hf = hf["vision_config"] or {}
    defaults = SiglipVisionConfig()
    fields = {
        name: type(getattr(defaults, name))(hf.get(name, getattr(defaults, name))) for name in _HF_FIELDS
    }
    fields.update(overrides)
    return SiglipVisionConfig(**fields)


def _activation(name: str):
    table = {
        "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    }
    if name not in table:
        raise ValueError(f"unsupported SigLIP hidden_act {name!r}; supported: {sorted(table)}")
    return table[name]


def _layer_norm(cfg: SiglipVisionConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=jnp.float32,
        param_dtype=jnp.dtype(cfg.param_dtype),
        scale_init=partitioned(nn.initializers.ones, ("norm",)),
        bias_init=partitioned(nn.initializers.zeros, ("norm",)),
        name=name,
    )


class SiglipAttention(nn.Module):
    config: SiglipVisionConfig

    @nn.compact
    def __call__(self, x_bld: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def proj(name: str) -> jax.Array:
            return nn.DenseGeneral(
                (cfg.num_attention_heads, cfg.head_dim),
                dtype=dtype,
                param_dtype=pdtype,
                kernel_init=partitioned(nn.initializers.lecun_normal(), ("embed", "heads", "kv")),
                bias_init=partitioned(nn.initializers.zeros, ("heads", "kv")),
                name=name,
            )(x_bld)

        heads = ("act_batch", "act_len", "act_heads", None)
        q, k, v = (constrain(proj(n), heads) for n in ("q_proj", "k_proj", "v_proj"))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * cfg.head_dim**-0.5
        weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
        out = constrain(jnp.einsum("bhqk,bkhd->bqhd", weights, v), heads)
        return nn.DenseGeneral(
            cfg.hidden_size,
            axis=(-2, -1),
            dtype=dtype,
            param_dtype=pdtype,
            kernel_init=partitioned(nn.initializers.lecun_normal(), ("heads", "kv", "embed")),
            bias_init=partitioned(nn.initializers.zeros, ("embed",)),
            name="out_proj",
        )(out)


class SiglipMLP(nn.Module):
    config: SiglipVisionConfig

    @nn.compact
    def __call__(self, x_bld: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def linear(name, features, names, x):
            return nn.Dense(
                features,
                dtype=dtype,
                param_dtype=pdtype,
                kernel_init=partitioned(nn.initializers.lecun_normal(), names),
                bias_init=partitioned(nn.initializers.zeros, (names[1],)),
                name=name,
            )(x)

        h = _activation(cfg.hidden_act)(linear("fc1", cfg.intermediate_size, ("embed", "mlp"), x_bld))
        h = constrain(h, ("act_batch", "act_len", "act_mlp"))
        return linear("fc2", cfg.hidden_size, ("mlp", "embed"), h)


class SiglipEncoderLayer(nn.Module):
    """Pre-norm self-attention + MLP; returns (x, None) so it can be the body of `nn.scan`."""

    config: SiglipVisionConfig

    @nn.compact
    def __call__(self, x_bld: jax.Array) -> tuple[jax.Array, None]:
        cfg, dtype = self.config, jnp.dtype(self.config.dtype)
        x_bld = x_bld + SiglipAttention(cfg, name="self_attn")(
            _layer_norm(cfg, "layer_norm1")(x_bld).astype(dtype)
        )
        x_bld = x_bld + SiglipMLP(cfg, name="mlp")(_layer_norm(cfg, "layer_norm2")(x_bld).astype(dtype))
        return constrain(x_bld.astype(dtype), TOKENS), None


class SiglipVisionTower(nn.Module):
    """pixel_values (B, H, W, C) normalised to [-1, 1], H = W = image_size -> last_hidden_state
    (B, num_patches, hidden_size) after the post LayerNorm, float32."""

    config: SiglipVisionConfig

    @nn.compact
    def __call__(self, pixels_bhwc: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        p, c, d = cfg.patch_size, cfg.num_channels, cfg.hidden_size
        expected = (cfg.image_size, cfg.image_size, c)
        if pixels_bhwc.ndim != 4 or tuple(pixels_bhwc.shape[1:]) != expected:
            raise ValueError(
                f"SigLIP tower expects pixels (B, {expected[0]}, {expected[1]}, {c}), got {pixels_bhwc.shape}; "
                "resize with sketch_to_pixels(sketch, image_size)"
            )
        # Stored as torch's (D, C, kh, kw) reversed, (kw, kh, C, D), so the loader reads it as one transpose.
        kernel = self.param(
            "patch_embedding",
            partitioned(nn.initializers.lecun_normal(), (None, None, None, "embed")),
            (p, p, c, d),
            pdtype,
        )
        bias = self.param(
            "patch_embedding_bias", partitioned(nn.initializers.zeros, ("embed",)), (d,), pdtype
        )
        x = jax.lax.conv_general_dilated(
            pixels_bhwc.astype(dtype),
            jnp.transpose(kernel, (1, 0, 2, 3)).astype(dtype),
            window_strides=(p, p),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        b = x.shape[0]
        x = x.reshape(b, -1, d) + bias.astype(dtype)
        positions = self.param(
            "position_embedding",
            partitioned(nn.initializers.normal(0.02), (None, "embed")),
            (cfg.num_patches, d),
            pdtype,
        )
        x = constrain((x + positions.astype(dtype)[None]).astype(dtype), TOKENS)

        layer = SiglipEncoderLayer
        if cfg.remat:
            layer = nn.remat(layer, prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            x, _ = nn.scan(
                layer,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=cfg.num_hidden_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, name="layers")(x)
        else:
            for i in range(cfg.num_hidden_layers):
                x, _ = layer(cfg, name=f"layer_{i}")(x)
        return _layer_norm(cfg, "post_layernorm")(x).astype(jnp.float32)


def sketch_to_pixels(sketch_bhw1: jax.Array, image_size: int) -> jax.Array:
    """A sketch as the image SigLIP expects: black lines on white, bilinear-resized to image_size, RGB in
    [-1, 1] (its processor's rescale then mean/std 0.5 normalisation)."""
    ink = sketch_to_float(sketch_bhw1)
    b = ink.shape[0]
    ink = jax.image.resize(ink, (b, image_size, image_size, 1), "bilinear")
    return jnp.repeat(1.0 - 2.0 * ink, 3, axis=-1)


# ------------------------------------------------------------------------------------------------------------
# HF checkpoint mapping and loading.


def _prefix(reader: CheckpointReader | None) -> str:
    """A SiglipVisionModel folder has "embeddings...", a full SiglipModel "vision_model.embeddings..."."""
    if reader is None:
        return ""
    name = reader.first_present(
        "embeddings.patch_embedding.weight", "vision_model.embeddings.patch_embedding.weight"
    )
    return name[: -len("embeddings.patch_embedding.weight")]


def hf_sources(cfg: SiglipVisionConfig, reader: CheckpointReader | None = None) -> dict[str, Any]:
    """Our params tree with a `TensorSource` (HF tensor names) at each leaf."""
    p = _prefix(reader)
    heads_split = (1, 2)  # torch (heads*kv, embed) -> ours (embed, heads, kv)

    def plain(name: str, groups: tuple[int, ...] | None = None) -> TensorSource:
        return TensorSource((name,), groups=groups)

    def layer_sources(i: int) -> dict[str, Any]:
        q = f"{p}encoder.layers.{i}"
        attn = {
            n: {
                "kernel": TensorSource.linear(f"{q}.self_attn.{n}.weight", heads_split),
                "bias": plain(f"{q}.self_attn.{n}.bias", (2,)),
            }
            for n in ("q_proj", "k_proj", "v_proj")
        }
        attn["out_proj"] = {
            "kernel": TensorSource.linear(f"{q}.self_attn.out_proj.weight", (2, 1)),
            "bias": plain(f"{q}.self_attn.out_proj.bias"),
        }
        return {
            "layer_norm1": {
                "scale": plain(f"{q}.layer_norm1.weight"),
                "bias": plain(f"{q}.layer_norm1.bias"),
            },
            "self_attn": attn,
            "layer_norm2": {
                "scale": plain(f"{q}.layer_norm2.weight"),
                "bias": plain(f"{q}.layer_norm2.bias"),
            },
            "mlp": {
                n: {"kernel": TensorSource.linear(f"{q}.mlp.{n}.weight"), "bias": plain(f"{q}.mlp.{n}.bias")}
                for n in ("fc1", "fc2")
            },
        }

    tree: dict[str, Any] = {
        "patch_embedding": TensorSource((f"{p}embeddings.patch_embedding.weight",), transpose=True),
        "patch_embedding_bias": plain(f"{p}embeddings.patch_embedding.bias"),
        "position_embedding": plain(f"{p}embeddings.position_embedding.weight"),
        "post_layernorm": {
            "scale": plain(f"{p}post_layernorm.weight"),
            "bias": plain(f"{p}post_layernorm.bias"),
        },
    }
    if cfg.scan_layers:
        per_layer = [layer_sources(i) for i in range(cfg.num_hidden_layers)]
        tree["layers"] = jax.tree.map(
            lambda *s: TensorSource(tuple(x.names[0] for x in s), s[0].transpose, s[0].groups, stacked=True),
            *per_layer,
            is_leaf=lambda x: isinstance(x, TensorSource),
        )
    else:
        for i in range(cfg.num_hidden_layers):
            tree[f"layer_{i}"] = layer_sources(i)
    return tree


def abstract_params(cfg: SiglipVisionConfig) -> Any:
    """Boxed ShapeDtypeStructs of the tower's params (no memory used)."""
    pixels = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, cfg.num_channels), jnp.float32)
    return jax.eval_shape(SiglipVisionTower(cfg).init, jax.random.key(0), pixels)["params"]


def load_siglip_vision(
    model_dir: str | os.PathLike,
    *,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    progress: bool = True,
    **config_overrides: Any,
) -> tuple[SiglipVisionTower, dict[str, Any]]:
    """(module, {"params": ...}) from an HF SigLIP folder (vision model or full SiglipModel), read leaf by
    leaf across shards; with a mesh each leaf is created sharded by its logical names. `config_overrides` set
    runtime fields (dtype, param_dtype, scan_layers, remat)."""
    cfg = siglip_config_from_hf(read_config_json(model_dir), **config_overrides)
    reader = CheckpointReader(model_dir)
    params = load_params(
        reader,
        abstract_params(cfg),
        hf_sources(cfg, reader),
        mesh=mesh,
        rules=rules,
        dtype=jnp.dtype(cfg.param_dtype),
        progress=progress,
    )
    return SiglipVisionTower(cfg), {"params": params}


class SiglipSketchEncoder(nn.Module):
    """(B, H, W, 1) sketch -> frozen SigLIP patch tokens -> trainable projector -> (B, num_patches, out_dim)."""

    tower_config: SiglipVisionConfig
    out_dim: int
    hidden_dim: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, sketch_bhw1: jax.Array) -> jax.Array:
        pixels = sketch_to_pixels(sketch_bhw1, self.tower_config.image_size)
        # Frozen: no gradient reaches the tower even when the caller differentiates the whole tree.
        features = jax.lax.stop_gradient(SiglipVisionTower(self.tower_config, name="tower")(pixels))
        return SketchProjector(self.out_dim, self.hidden_dim, self.dtype, name="projector")(features)


def load_siglip_sketch_encoder(
    model_dir: str | os.PathLike,
    out_dim: int,
    rng: jax.Array,
    *,
    hidden_dim: int | None = None,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    progress: bool = True,
    **config_overrides: Any,
) -> tuple[SiglipSketchEncoder, dict[str, Any]]:
    """The SigLIP sketch encoder with the tower loaded from `model_dir` and a freshly initialised projector
    (the tower is never initialised randomly: a 400M-parameter init would be wasted)."""
    tower, variables = load_siglip_vision(
        model_dir, mesh=mesh, rules=rules, progress=progress, **config_overrides
    )
    cfg = tower.config
    projector = SketchProjector(out_dim, hidden_dim)
    features = jnp.zeros((1, cfg.num_patches, cfg.hidden_size), jnp.float32)
    # Plain arrays like the loaded tower's (the logical names come from `jax.eval_shape(projector.init, ...)`).
    projector_params = unbox(jax.jit(projector.init)(rng, features)["params"])
    encoder = SiglipSketchEncoder(cfg, out_dim, hidden_dim)
    return encoder, {"params": {"tower": variables["params"], "projector": projector_params}}


def split_trainable(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable, frozen) top-level groups of a sketch encoder's params: the SigLIP tower is frozen, the rest
    (projector; the whole conv encoder) trains. Rejoin with {**trainable, **frozen}."""
    trainable = {k: v for k, v in params.items() if k not in FROZEN}
    frozen = {k: v for k, v in params.items() if k in FROZEN}
    return trainable, frozen


def num_tokens(sketch_hw: tuple[int, int], channels: tuple[int, ...]) -> int:
    """Tokens of the conv encoder for a sketch of `sketch_hw` (each stage after the stem halves, rounding up)."""
    h, w = sketch_hw
    for _ in channels[1:]:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h * w
