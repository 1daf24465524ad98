"""T5 encoder (v1.1 and the original) in Flax Linen, weight-compatible with HF `T5EncoderModel` folders.

T5 v1.1: RMSNorm without mean or bias, pre-norm blocks, gated-GELU (tanh approximation, `gelu_new`) feed
forward, no biases anywhere, no scaling of the q.k dot product (it is folded into the init), and a learned
relative position bias (bucketed distances) computed once by the first layer and shared by all layers.
The original T5 uses a ReLU (ungated) feed forward; `is_gated_act`/`dense_act_fn` switch between them.

Parameters carry logical axis names; blocks can be scanned (`scan_layers`, a leading "layers" axis) for fast
compiles at XXL size. `load_t5_encoder` reads an HF folder (single or sharded safetensors, T5EncoderModel or
T5ForConditionalGeneration: decoder tensors are ignored) directly into a sharded layout when given a mesh.
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

from motionaura_jax.models.layers import partitioned
from motionaura_jax.models.text.loading import CheckpointReader, TensorSource, load_params, read_config_json
from motionaura_jax.parallel.sharding import DEFAULT_RULES, Rules, constrain


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dense_act_fn: str = "gelu_new"
    is_gated_act: bool = True
    dtype: str = "float32"  # activations; norms and softmax always run in float32
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: bool = False

    def replace(self, **changes: Any) -> T5Config:
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        inner = self.num_heads * self.d_kv
        ff = self.d_ff * self.d_model * (3 if self.is_gated_act else 2)
        per_layer = 4 * self.d_model * inner + ff + 2 * self.d_model
        return (
            self.vocab_size * self.d_model
            + self.relative_attention_num_buckets * self.num_heads
            + self.num_layers * per_layer
            + self.d_model
        )


# Named configs of the public T5 v1.1 checkpoints (encoder side); `t5-v1_1-xxl` is the paper's text encoder.
T5_CONFIGS: dict[str, T5Config] = {
    "tiny": T5Config(vocab_size=384, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    "t5-v1_1-small": T5Config(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6),
    "t5-v1_1-base": T5Config(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
    "t5-v1_1-large": T5Config(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16),
    "t5-v1_1-xl": T5Config(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32, scan_layers=True),
    "t5-v1_1-xxl": T5Config(
        d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, scan_layers=True, dtype="bfloat16"
    ),
}


def t5_config(name: str, **overrides: Any) -> T5Config:
    """A named config (see `T5_CONFIGS`) e.g. `t5_config("t5-v1_1-xxl", scan_layers=False)`."""
    if name not in T5_CONFIGS:
        raise KeyError(f"unknown T5 config {name!r}; known: {sorted(T5_CONFIGS)}")
    return T5_CONFIGS[name].replace(**overrides)


def t5_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> T5Config:
    """Our config from an HF config.json dict (T5 or UMT5-style T5 v1.1 fields)."""
    ff_proj = str(hf.get("feed_forward_proj", "relu"))
    gated = ff_proj.startswith("gated-")
    act = ff_proj.split("-")[-1]
    act = "gelu_new" if act == "gelu" and gated else act  # HF maps "gated-gelu" to gelu_new (tanh)
    act = str(hf.get("dense_act_fn", act))
    gated = bool(hf.get("is_gated_act", gated))
    fields = dict(
        vocab_size=int(hf["vocab_size"]),
        d_model=int(hf["d_model"]),
        d_kv=int(hf["d_kv"]),
        d_ff=int(hf["d_ff"]),
        num_layers=int(hf["num_layers"]),
        num_heads=int(hf["num_heads"]),
        relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
        dense_act_fn=act,
        is_gated_act=gated,
    )
    fields.update(overrides)
    return T5Config(**fields)


def _activation(name: str):
    table = {
        "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "relu": jax.nn.relu,
        "silu": jax.nn.silu,
    }
    if name not in table:
        raise ValueError(f"unsupported T5 activation {name!r}; supported: {sorted(table)}")
    return table[name]


def relative_position_buckets(query_len: int, key_len: int, num_buckets: int, max_distance: int) -> jax.Array:
    """Bidirectional T5 buckets of (key - query) distances, int32 (query_len, key_len)."""
    relative = jnp.arange(key_len)[None, :] - jnp.arange(query_len)[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).astype(jnp.int32) * half
    distance = jnp.abs(relative)
    max_exact = half // 2
    # Log-spaced buckets beyond max_exact; float32 log then truncation toward zero, as the reference does.
    safe = jnp.maximum(distance, 1).astype(jnp.float32)
    large = max_exact + (
        jnp.log(safe / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).astype(jnp.int32)
    large = jnp.minimum(large, half - 1)
    return buckets + jnp.where(distance < max_exact, distance, large)


class RMSNorm(nn.Module):
    """T5 LayerNorm: x / rms(x) * scale, statistics in float32."""

    epsilon: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale", partitioned(nn.initializers.ones, ("norm",)), (x.shape[-1],), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (x32 * scale.astype(jnp.float32)).astype(self.dtype)


class T5SelfAttention(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x_bld: jax.Array, bias_bhqk: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def proj(name: str, std: float) -> jax.Array:
            return nn.DenseGeneral(
                (cfg.num_heads, cfg.d_kv),
                use_bias=False,
                dtype=dtype,
                param_dtype=pdtype,
                kernel_init=partitioned(nn.initializers.normal(std), ("embed", "heads", "kv")),
                name=name,
            )(x_bld)

        # T5's init folds the 1/sqrt(d_kv) of attention into q (mesh-tensorflow convention).
        q_blhk = proj("q", (cfg.d_model * cfg.d_kv) ** -0.5)
        k_blhk = proj("k", cfg.d_model**-0.5)
        v_blhk = proj("v", cfg.d_model**-0.5)
        q_blhk = constrain(q_blhk, ("act_batch", "act_len", "act_heads", None))
        k_blhk = constrain(k_blhk, ("act_batch", "act_len", "act_heads", None))
        logits_bhqk = jnp.einsum("bqhd,bkhd->bhqk", q_blhk, k_blhk, preferred_element_type=jnp.float32)
        weights_bhqk = jax.nn.softmax(logits_bhqk + bias_bhqk, axis=-1).astype(dtype)
        out_blhk = jnp.einsum("bhqk,bkhd->bqhd", weights_bhqk, v_blhk)
        out_blhk = constrain(out_blhk, ("act_batch", "act_len", "act_heads", None))
        return nn.DenseGeneral(
            cfg.d_model,
            axis=(-2, -1),
            use_bias=False,
            dtype=dtype,
            param_dtype=pdtype,
            kernel_init=partitioned(
                nn.initializers.normal((cfg.num_heads * cfg.d_kv) ** -0.5), ("heads", "kv", "embed")
            ),
            name="o",
        )(out_blhk)


class T5FeedForward(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x_bld: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        act = _activation(cfg.dense_act_fn)

        def dense(name: str, features: int, std: float, names: tuple[str, str], x: jax.Array) -> jax.Array:
            return nn.Dense(
                features,
                use_bias=False,
                dtype=dtype,
                param_dtype=pdtype,
                kernel_init=partitioned(nn.initializers.normal(std), names),
                name=name,
            )(x)

        if cfg.is_gated_act:
            h_blf = act(dense("wi_0", cfg.d_ff, cfg.d_model**-0.5, ("embed", "mlp"), x_bld))
            h_blf = h_blf * dense("wi_1", cfg.d_ff, cfg.d_model**-0.5, ("embed", "mlp"), x_bld)
        else:
            h_blf = act(dense("wi", cfg.d_ff, cfg.d_model**-0.5, ("embed", "mlp"), x_bld))
        h_blf = constrain(h_blf, ("act_batch", "act_len", "act_mlp"))
        return dense("wo", cfg.d_model, cfg.d_ff**-0.5, ("mlp", "embed"), h_blf)


class T5Block(nn.Module):
    """Pre-norm self-attention + feed forward, residuals in the activation dtype."""

    config: T5Config

    @nn.compact
    def __call__(self, x_bld: jax.Array, bias_bhqk: jax.Array) -> tuple[jax.Array, None]:
        cfg = self.config
        norm = dict(
            epsilon=cfg.layer_norm_epsilon, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype)
        )
        x_bld = x_bld + T5SelfAttention(cfg, name="attention")(
            RMSNorm(**norm, name="attention_norm")(x_bld), bias_bhqk
        )
        x_bld = x_bld + T5FeedForward(cfg, name="mlp")(RMSNorm(**norm, name="mlp_norm")(x_bld))
        return constrain(x_bld, ("act_batch", "act_len", "act_embed")), None


class T5Encoder(nn.Module):
    """ids (B, L) int, mask (B, L) bool -> hidden states (B, L, d_model) after the final norm.

    For example:

        encoder = T5Encoder(t5_config("tiny"))     # load_t5_encoder(...) for Hugging Face weights
        states = encoder.apply(encoder.init(jax.random.PRNGKey(0), ids_bl, mask_bl), ids_bl, mask_bl)
    """

    config: T5Config

    @nn.compact
    def __call__(self, ids_bl: jax.Array, mask_bl: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        length = ids_bl.shape[1]
        mask_bl = jnp.ones(ids_bl.shape, bool) if mask_bl is None else mask_bl.astype(bool)
        embed = nn.Embed(
            cfg.vocab_size,
            cfg.d_model,
            dtype=dtype,
            param_dtype=pdtype,
            embedding_init=partitioned(nn.initializers.normal(1.0), ("vocab", "embed")),
            name="embed",
        )
        x_bld = constrain(embed(ids_bl), ("act_batch", "act_len", "act_embed"))

        table = self.param(
            "relative_attention_bias",
            partitioned(nn.initializers.normal(1.0), (None, "heads")),
            (cfg.relative_attention_num_buckets, cfg.num_heads),
            pdtype,
        )
        buckets_qk = relative_position_buckets(
            length, length, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
        )
        position_bias_hqk = jnp.transpose(table.astype(jnp.float32)[buckets_qk], (2, 0, 1))
        mask_bias_bk = jnp.where(mask_bl, 0.0, jnp.finfo(jnp.float32).min)
        bias_bhqk = position_bias_hqk[None] + mask_bias_bk[:, None, None, :]

        block = T5Block
        if cfg.remat:
            block = nn.remat(block, prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            x_bld, _ = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=nn.broadcast,
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, name="blocks")(x_bld, bias_bhqk)
        else:
            for i in range(cfg.num_layers):
                x_bld, _ = block(cfg, name=f"block_{i}")(x_bld, bias_bhqk)
        return RMSNorm(cfg.layer_norm_epsilon, dtype, pdtype, name="final_norm")(x_bld)


# ------------------------------------------------------------------------------------------------------------
# HF checkpoint mapping and loading.


def hf_sources(cfg: T5Config, reader: CheckpointReader | None = None) -> dict[str, Any]:
    """Our params tree with a `TensorSource` (HF tensor names) at each leaf."""
    embed_name = "shared.weight"
    if reader is not None:
        embed_name = reader.first_present("shared.weight", "encoder.embed_tokens.weight")
    heads_split = (1, 2)  # torch (out=heads*kv, in) -> ours (embed, heads, kv)

    def block_sources(layer: int) -> dict[str, Any]:
        p = f"encoder.block.{layer}.layer"
        ff = {"wo": TensorSource.linear(f"{p}.1.DenseReluDense.wo.weight")}
        if cfg.is_gated_act:
            ff["wi_0"] = TensorSource.linear(f"{p}.1.DenseReluDense.wi_0.weight")
            ff["wi_1"] = TensorSource.linear(f"{p}.1.DenseReluDense.wi_1.weight")
        else:
            ff["wi"] = TensorSource.linear(f"{p}.1.DenseReluDense.wi.weight")
        return {
            "attention_norm": {"scale": TensorSource((f"{p}.0.layer_norm.weight",))},
            "attention": {
                "q": {"kernel": TensorSource.linear(f"{p}.0.SelfAttention.q.weight", heads_split)},
                "k": {"kernel": TensorSource.linear(f"{p}.0.SelfAttention.k.weight", heads_split)},
                "v": {"kernel": TensorSource.linear(f"{p}.0.SelfAttention.v.weight", heads_split)},
                "o": {"kernel": TensorSource.linear(f"{p}.0.SelfAttention.o.weight", (2, 1))},
            },
            "mlp_norm": {"scale": TensorSource((f"{p}.1.layer_norm.weight",))},
            "mlp": {name: {"kernel": source} for name, source in ff.items()},
        }

    tree: dict[str, Any] = {
        "embed": {"embedding": TensorSource((embed_name,))},
        "relative_attention_bias": TensorSource(
            ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",)
        ),
        "final_norm": {"scale": TensorSource(("encoder.final_layer_norm.weight",))},
    }
    if cfg.scan_layers:
        per_layer = [block_sources(i) for i in range(cfg.num_layers)]
        tree["blocks"] = jax.tree.map(
            lambda *sources: TensorSource(
                tuple(s.names[0] for s in sources), sources[0].transpose, sources[0].groups, stacked=True
            ),
            *per_layer,
            is_leaf=lambda x: isinstance(x, TensorSource),
        )
    else:
        for i in range(cfg.num_layers):
            tree[f"block_{i}"] = block_sources(i)
    return tree


def abstract_params(cfg: T5Config, length: int = 8) -> Any:
    """Boxed ShapeDtypeStructs of the params (no memory used): shapes, dtypes and logical names."""
    model = T5Encoder(cfg)
    ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
    return jax.eval_shape(lambda rng, i: model.init(rng, i), jax.random.key(0), ids)["params"]


def load_t5_encoder(
    model_dir: str | os.PathLike,
    *,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    progress: bool = True,
    **config_overrides: Any,
) -> tuple[T5Encoder, dict[str, Any]]:
    """(module, {"params": ...}) from an HF T5 folder; with a mesh the params are created sharded.

    `config_overrides` set runtime fields (dtype, param_dtype, scan_layers, remat); the architecture comes
    from the folder's config.json.
    """
    cfg = t5_config_from_hf(read_config_json(model_dir), **config_overrides)
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
    return T5Encoder(cfg), {"params": params}
