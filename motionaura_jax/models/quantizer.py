"""Vector quantizer: nearest code with a straight-through estimator, commitment loss, EMA or learned codebook,
l2-normalised (cosine) codes, an optional factorised low-dimensional code space, dead-code restart, usage
stats.

Codebook health comes first (a naive quantizer on Moving Shapes collapsed to 9% usage): codes are
l2-normalised
(look-up by cosine similarity, so no code can sit unreachably far away), updated as an exponential moving
average of the encoder outputs assigned to them, and a code whose EMA count falls below a fraction of the
average is restarted at a random encoder output of the current batch.

The EMA state lives in the "vq" variable collection (`embedding`, `cluster_size`, `embed_sum`); it is updated
only when that collection is mutable and `train=True`. Per-code counts and sums are computed with `shard_map`
when a mesh is active: every device reduces its own tokens and only the (K,) / (K, d) results are all-reduced,
so the batch is never gathered on one device.
"""

from __future__ import annotations

import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec

from motionaura_jax.models.layers import dense
from motionaura_jax.parallel import sharding as sharding_lib

BATCH_MESH_AXES = ("data", "fsdp")


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + eps)


def _local_stats(ids_n: jax.Array, z_nd: jax.Array, num_codes: int) -> tuple[jax.Array, jax.Array]:
    counts = jax.ops.segment_sum(jnp.ones_like(ids_n, jnp.float32), ids_n, num_segments=num_codes)
    sums = jax.ops.segment_sum(z_nd.astype(jnp.float32), ids_n, num_segments=num_codes)
    return counts, sums


def codebook_stats(ids_n: jax.Array, z_nd: jax.Array, num_codes: int) -> tuple[jax.Array, jax.Array]:
    """Per-code token counts (K,) and sums of assigned vectors (K, d).

    With an active mesh whose batch axes divide the tokens: a local segment-sum per device and a psum over the
    batch axes (no device ever holds the whole batch). Otherwise a plain segment-sum.
    """
    mesh = sharding_lib.active_mesh()
    axes = tuple(a for a in BATCH_MESH_AXES if mesh is not None and mesh.shape.get(a, 1) > 1)
    n_shards = math.prod(mesh.shape[a] for a in axes) if axes else 1
    if not axes or ids_n.shape[0] % n_shards:
        return _local_stats(ids_n, z_nd, num_codes)

    def per_shard(ids, z):
        counts, sums = _local_stats(ids, z, num_codes)
        return jax.lax.psum(counts, axes), jax.lax.psum(sums, axes)

    spec = PartitionSpec(axes)
    return jax.shard_map(
        per_shard,
        mesh=mesh,
        in_specs=(spec, spec),
        out_specs=(PartitionSpec(), PartitionSpec()),
        check_vma=False,
    )(ids_n, z_nd)


def usage_metrics(counts_k: jax.Array) -> dict[str, jax.Array]:
    """Share of codes used in these counts and the perplexity (exp of the entropy) of the code
    distribution."""
    total = jnp.maximum(jnp.sum(counts_k), 1.0)
    probs = counts_k / total
    entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.maximum(probs, 1e-30)), 0.0))
    return {"codebook_usage": jnp.mean((counts_k > 0).astype(jnp.float32)), "perplexity": jnp.exp(entropy)}


def ema_update(
    embedding_kd: jax.Array,
    cluster_size_k: jax.Array,
    embed_sum_kd: jax.Array,
    counts_k: jax.Array,
    sums_kd: jax.Array,
    *,
    decay: float,
    eps: float,
    normalize: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One EMA step (VQ-VAE-2 / Sonnet form with Laplace smoothing); returns (embedding, cluster_size,
    embed_sum).

    cluster_size <- decay*cluster_size + (1-decay)*counts; embed_sum <- decay*embed_sum + (1-decay)*sums;
    embedding = embed_sum / smoothed(cluster_size) (then l2-normalised for cosine codes). A code with no mass
    keeps its embedding.
    """
    del embedding_kd
    cluster_size = decay * cluster_size_k + (1.0 - decay) * counts_k
    embed_sum = decay * embed_sum_kd + (1.0 - decay) * sums_kd
    n = jnp.sum(cluster_size)
    k = cluster_size.shape[0]
    smoothed = (cluster_size + eps) / (n + k * eps) * n
    embedding = embed_sum / jnp.maximum(smoothed, 1e-12)[:, None]
    if normalize:
        embedding = l2_normalize(embedding)
    return embedding, cluster_size, embed_sum


@flax.struct.dataclass
class QuantizerOutput:
    z_q: jax.Array  # quantized latent in the input's dimension, straight-through gradient to the input
    ids: jax.Array  # int32 code ids, the input's shape without its last dim
    loss: jax.Array  # commitment (+ codebook loss for a learned codebook)
    metrics: dict[str, jax.Array]


class VectorQuantizer(nn.Module):
    """Config keys: num_codes, code_dim, l2_normalize, ema, decay, eps, beta, restart (bool),
    restart_threshold (fraction of the average per-code count below which a code is dead).

        quantizer = VectorQuantizer(quantizer_config())           # configs/vae.py
        variables = quantizer.init(jax.random.PRNGKey(0), z_bthwc)
        q = quantizer.apply(variables, z_bthwc)                    # QuantizerOutput: .ids, .z_q, ...
    """

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool = False) -> QuantizerOutput:
        c = self.config
        k, cd = int(c.num_codes), int(c.code_dim)
        in_dim = z.shape[-1]
        lead_shape = z.shape[:-1]
        # Factorised code space (ViT-VQGAN): look-ups happen in a low dimension, projected in and out.
        project = in_dim != cd
        z_e = dense(cd, ("conv_in", None), "in_proj")(z) if project else z
        z_e = z_e.astype(jnp.float32)
        if c.l2_normalize:
            z_e = l2_normalize(z_e)

        def init_codes(rng, shape):
            codes = jax.random.normal(rng, shape, jnp.float32)
            return l2_normalize(codes) if c.l2_normalize else codes * 0.1

        if c.ema:
            embedding = self.variable(
                "vq",
                "embedding",
                sharding_lib.with_logical_partitioning(
                    lambda: init_codes(self.make_rng("params"), (k, cd)), ("codebook", None)
                ),
            )
            # Zero counts mark every code dead: the first training step restarts them all from encoder outputs
            # (a data-dependent init).
            cluster_size = self.variable(
                "vq",
                "cluster_size",
                sharding_lib.with_logical_partitioning(lambda: jnp.zeros((k,), jnp.float32), ("codebook",)),
            )
            embed_sum = self.variable(
                "vq",
                "embed_sum",
                sharding_lib.with_logical_partitioning(lambda: embedding.value, ("codebook", None)),
            )
            codes = embedding.value
        else:
            codes = self.param(
                "codebook", sharding_lib.with_logical_partitioning(init_codes, ("codebook", None)), (k, cd)
            )
            if c.l2_normalize:
                codes = l2_normalize(codes)

        z_nd = z_e.reshape(-1, cd)
        if c.l2_normalize:
            scores = z_nd @ codes.T  # cosine similarity; argmax == nearest on the sphere
        else:
            scores = 2.0 * z_nd @ codes.T - jnp.sum(jnp.square(codes), axis=-1)[None, :]
        ids_n = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        z_q_nd = jnp.take(codes, ids_n, axis=0)

        commit = jnp.mean(jnp.square(z_nd - jax.lax.stop_gradient(z_q_nd)))
        loss = c.beta * commit
        if not c.ema:
            loss = loss + jnp.mean(jnp.square(jax.lax.stop_gradient(z_nd) - z_q_nd))

        counts, sums = codebook_stats(ids_n, jax.lax.stop_gradient(z_nd), k)
        metrics = {"vq_commit": commit, **usage_metrics(counts)}

        if c.ema and train and self.is_mutable_collection("vq") and not self.is_initializing():
            new_emb, new_cs, new_es = ema_update(
                codes,
                cluster_size.value,
                embed_sum.value,
                counts,
                sums,
                decay=c.decay,
                eps=c.eps,
                normalize=c.l2_normalize,
            )
            if c.restart:
                new_emb, new_cs, new_es, n_dead = self._restart(
                    new_emb, new_cs, new_es, jax.lax.stop_gradient(z_e), ids_n.shape[0]
                )
                metrics["vq_restarted"] = n_dead
            embedding.value, cluster_size.value, embed_sum.value = new_emb, new_cs, new_es
            metrics["codebook_alive"] = jnp.mean(
                (new_cs >= c.restart_threshold * ids_n.shape[0] / k).astype(jnp.float32)
            )

        z_q_st = z_nd + jax.lax.stop_gradient(z_q_nd - z_nd)  # straight-through
        z_q = z_q_st.reshape(*lead_shape, cd)
        if project:
            z_q = dense(in_dim, (None, "conv_in"), "out_proj")(z_q.astype(z.dtype))
        return QuantizerOutput(
            z_q=z_q.astype(z.dtype), ids=ids_n.reshape(lead_shape), loss=loss, metrics=metrics
        )

    def _restart(self, embedding_kd, cluster_size_k, embed_sum_kd, z_e, n_tokens):
        """Dead codes (EMA count < restart_threshold * average count) jump to random encoder outputs of this
        batch.

        Candidates are taken at the same random positions of every example (an index along the unsharded token
        axis), so picking them stays local to each batch shard; only K candidate rows are gathered.
        """
        c = self.config
        k, cd = embedding_kd.shape
        average = n_tokens / k
        dead = cluster_size_k < c.restart_threshold * average
        b = z_e.shape[0]
        per_example = z_e.reshape(b, -1, cd)
        m = per_example.shape[1]
        take = -(-k // b)
        rng = self.make_rng("restart")
        positions = jax.random.randint(rng, (take,), 0, m)
        candidates = jnp.take(per_example, positions, axis=1).reshape(-1, cd)
        if candidates.shape[0] < k:  # fewer tokens than codes: reuse them with a little noise
            reps = -(-k // candidates.shape[0])
            candidates = jnp.tile(candidates, (reps, 1))
            noise = 1e-2 * jax.random.normal(jax.random.fold_in(rng, 1), candidates.shape)
            candidates = candidates + noise
        candidates = candidates[:k]
        if c.l2_normalize:
            candidates = l2_normalize(candidates)
        # A restarted code gets the average count: a grace period before it can be judged dead again.
        embedding = jnp.where(dead[:, None], candidates, embedding_kd)
        cluster_size = jnp.where(dead, average, cluster_size_k)
        embed_sum = jnp.where(dead[:, None], candidates * average, embed_sum_kd)
        return embedding, cluster_size, embed_sum, jnp.sum(dead.astype(jnp.float32))


def lookup_codes(
    variables: dict, config: ml_collections.ConfigDict, ids: jax.Array, out_dim: int
) -> jax.Array:
    """Code ids -> quantized latent (B, ..., out_dim), read straight from a quantizer's variables.

    `variables` holds the quantizer's own subtrees: {"params": ..., "vq": ...}.
    """
    if config.ema:
        codes = variables["vq"]["embedding"]
    else:
        codes = variables["params"]["codebook"]
        if config.l2_normalize:
            codes = l2_normalize(codes)
    codes = nn.meta.unbox(codes)
    z = jnp.take(codes, ids, axis=0)
    if out_dim != int(config.code_dim):
        proj = nn.meta.unbox(variables["params"]["out_proj"])
        z = z @ proj["kernel"].astype(z.dtype) + proj["bias"].astype(z.dtype)
    return z
