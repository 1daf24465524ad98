"""Vector quantizer: EMA update against a hand-computed example, nearest-code look-up, straight-through
gradients, dead-code restart, usage statistics, and sharded statistics equal to unsharded ones."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from motionaura_jax.models.quantizer import (
    VectorQuantizer,
    codebook_stats,
    ema_update,
    lookup_codes,
    usage_metrics,
)
from motionaura_jax.parallel import sharding as sharding_lib


def qconfig(**kw):
    base = dict(
        num_codes=4,
        code_dim=2,
        l2_normalize=False,
        ema=True,
        decay=0.5,
        eps=0.0,
        beta=0.25,
        restart=False,
        restart_threshold=0.03,
    )
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_ema_update_matches_hand_computed_example():
    # codebook e0=(1,0), e1=(0,1); inputs (0.9,0.1),(0.8,0.0) -> e0 and (0.1,0.7) -> e1.
    # counts (2,1); sums (1.7,0.1),(0.1,0.7). With decay 0.5, cluster_size (1,1), embed_sum = codebook:
    # cluster_size = 0.5*1 + 0.5*2 = 1.5 and 0.5*1 + 0.5*1 = 1.0
    # embed_sum    = 0.5*(1,0) + 0.5*(1.7,0.1) = (1.35,0.05);  0.5*(0,1) + 0.5*(0.1,0.7) = (0.05,0.85)
    # embedding    = embed_sum / cluster_size = (0.9, 0.0333...), (0.05, 0.85)   (eps = 0: no smoothing)
    codes = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    z = jnp.array([[0.9, 0.1], [0.8, 0.0], [0.1, 0.7]])
    ids = jnp.array([0, 0, 1])
    counts, sums = codebook_stats(ids, z, 2)
    np.testing.assert_allclose(counts, [2.0, 1.0])
    np.testing.assert_allclose(sums, [[1.7, 0.1], [0.1, 0.7]], atol=1e-6)
    emb, cs, es = ema_update(codes, jnp.ones(2), codes, counts, sums, decay=0.5, eps=0.0, normalize=False)
    np.testing.assert_allclose(cs, [1.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(es, [[1.35, 0.05], [0.05, 0.85]], atol=1e-6)
    np.testing.assert_allclose(emb, [[0.9, 0.05 / 1.5], [0.05, 0.85]], atol=1e-6)
    # Laplace smoothing with eps=1: n = 2.5, smoothed = (cs + 1) / (2.5 + 2) * 2.5 = (1.3889, 1.1111)
    emb_s, _, _ = ema_update(codes, jnp.ones(2), codes, counts, sums, decay=0.5, eps=1.0, normalize=False)
    np.testing.assert_allclose(emb_s[:, 0], [1.35 / (2.5 / 4.5 * 2.5), 0.05 / (2.0 / 4.5 * 2.5)], rtol=1e-5)


def test_module_ema_step_equals_formula_and_assigns_nearest():
    cfg = qconfig(num_codes=3, code_dim=2)
    vq = VectorQuantizer(cfg)
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 2))
    variables = nn.meta.unbox(vq.init({"params": jax.random.PRNGKey(1)}, z))
    codes = np.asarray(variables["vq"]["embedding"])
    variables["vq"]["cluster_size"] = jnp.ones(3)
    out, updated = vq.apply(variables, z, train=True, mutable=["vq"])
    # Brute-force nearest code.
    flat = np.asarray(z).reshape(-1, 2)
    expected_ids = np.argmin(((flat[:, None] - codes[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(np.asarray(out.ids).reshape(-1), expected_ids)
    counts = np.bincount(expected_ids, minlength=3)
    sums = np.stack([flat[expected_ids == k].sum(0) for k in range(3)])
    cs = 0.5 * 1 + 0.5 * counts
    es = 0.5 * codes + 0.5 * sums
    np.testing.assert_allclose(updated["vq"]["cluster_size"], cs, rtol=1e-6)
    np.testing.assert_allclose(updated["vq"]["embedding"], es / cs[:, None], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.z_q, codes[expected_ids].reshape(2, 5, 2), atol=1e-6)
    # Without train=True (or a mutable "vq") the codebook does not move.
    _, same = vq.apply(variables, z, train=False, mutable=["vq"])
    np.testing.assert_array_equal(same["vq"]["embedding"], variables["vq"]["embedding"])


@pytest.mark.parametrize("factorized", [False, True])
def test_straight_through_gradient(factorized):
    cfg = qconfig(num_codes=8, code_dim=4 if factorized else 6, l2_normalize=True)
    vq = VectorQuantizer(cfg)
    z = jax.random.normal(jax.random.PRNGKey(0), (3, 6))
    variables = vq.init({"params": jax.random.PRNGKey(1)}, z)
    target = jax.random.normal(jax.random.PRNGKey(2), (3, 6))

    def loss(z):
        return jnp.sum(vq.apply(variables, z).z_q * target)

    g = jax.grad(loss)(z)
    assert float(jnp.abs(g).sum()) > 0, "no gradient reached the input through the quantizer"
    if not factorized:
        # z_q = normalize(z) + sg(...): the gradient is exactly that of sum(normalize(z) * target).
        from motionaura_jax.models.quantizer import l2_normalize

        g_ref = jax.grad(lambda z: jnp.sum(l2_normalize(z) * target))(z)
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)


def test_dead_codes_restart_at_batch_vectors():
    cfg = qconfig(num_codes=4, code_dim=2, l2_normalize=True, restart=True, restart_threshold=0.75)
    vq = VectorQuantizer(cfg)
    # All inputs sit near (1, 0): only code 0 is used; the others decay to 0.5 < 0.75 * (4 tokens / 4 codes).
    z = jnp.array([[1.0, 0.01], [1.0, -0.02], [0.99, 0.0], [1.0, 0.03]])[None]
    variables = nn.meta.unbox(vq.init({"params": jax.random.PRNGKey(1)}, z))
    variables["vq"]["embedding"] = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    variables["vq"]["cluster_size"] = jnp.ones(4)
    out, upd = vq.apply(variables, z, train=True, mutable=["vq"], rngs={"restart": jax.random.PRNGKey(3)})
    assert float(out.metrics["vq_restarted"]) == 3.0
    emb = np.asarray(upd["vq"]["embedding"])
    # Every restarted code is now one of the (normalised) batch vectors.
    zn = np.asarray(z[0]) / np.linalg.norm(np.asarray(z[0]), axis=1, keepdims=True)
    for k in (1, 2, 3):
        assert np.min(np.abs(zn - emb[k]).sum(1)) < 1e-4
    np.testing.assert_allclose(upd["vq"]["cluster_size"][1:], 1.0)  # grace period: the average count (4/4)


def test_usage_and_perplexity():
    m = usage_metrics(jnp.array([2.0, 2.0, 0.0, 0.0]))
    assert float(m["codebook_usage"]) == 0.5
    np.testing.assert_allclose(m["perplexity"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(usage_metrics(jnp.array([5.0, 0.0, 0.0, 0.0]))["perplexity"], 1.0, rtol=1e-6)


def test_sharded_stats_equal_unsharded_without_gathering_the_batch():
    devices = np.array(jax.devices()[:8]).reshape(2, 4, 1, 1)
    mesh = Mesh(devices, ("data", "fsdp", "tensor", "sequence"))
    ids = jax.random.randint(jax.random.PRNGKey(0), (64,), 0, 16)
    z = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    ref_counts, ref_sums = codebook_stats(ids, z, 16)
    batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    ids_s, z_s = jax.device_put(ids, batch), jax.device_put(z, batch)

    def f(ids, z):
        with sharding_lib.use_mesh(mesh):
            return codebook_stats(ids, z, 16)

    lowered = jax.jit(f).lower(ids_s, z_s)
    hlo = lowered.compile().as_text()
    assert "all-gather" not in hlo, "codebook statistics gathered the batch"
    counts, sums = jax.jit(f)(ids_s, z_s)
    np.testing.assert_allclose(counts, ref_counts)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-5, atol=1e-5)


def test_lookup_codes_matches_forward():
    cfg = qconfig(num_codes=8, code_dim=4, l2_normalize=True)
    vq = VectorQuantizer(cfg)
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 6))
    variables = vq.init({"params": jax.random.PRNGKey(1)}, z)
    out = vq.apply(variables, z)
    np.testing.assert_allclose(lookup_codes(variables, cfg, out.ids, 6), out.z_q, rtol=1e-5, atol=1e-6)
