"""3D-MBQ-VAE model: kernels equal their reference forms, shapes for 1+4k frames, causality, straight-through
gradients reach the encoder, chunked (streaming) encode/decode equals the whole clip, masking."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from motionaura_jax.configs.vae import mask_config, model_config
from motionaura_jax.models import layers
from motionaura_jax.models.vqvae import VQVAE, compression, neighbour_ids
from motionaura_jax.train.vae import mask_clip


def tiny_config(**kw) -> ml_collections.ConfigDict:
    c = model_config()
    c.channels, c.blocks = (8, 16, 16), (1, 1, 1)
    c.down_space, c.down_time = (True, False), (True, True)
    c.stem_patch, c.stem_time_kernel = 2, 3
    c.expand, c.norm_groups, c.attn_heads = 2, 4, 2
    c.z_channels, c.mfi_hidden = 8, 16
    c.mid_attention = True
    c.mfi = False  # the MFI head's shapes depend on the frame count; it is tested with the training step
    c.quantizer.num_codes, c.quantizer.code_dim = 32, 4
    for k, v in kw.items():
        c[k] = v
    return c


def randomize(params, scale=0.2, seed=0):
    """Zero-initialised projections make every block an identity at init; give them values so the tests see
    the whole network."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


class Jitted:
    """`model.apply` under jit (eager Flax dispatch of the shift-and-add kernels is slow)."""

    def __init__(self, model):
        self.model = model
        self._apply = jax.jit(model.apply, static_argnames=("method", "mutable", "train"))

    def apply(self, *args, **kw):
        return self._apply(*args, **kw)


def build(config, x, seed=1):
    model = VQVAE(config)
    variables = nn.meta.unbox(jax.jit(model.init)({"params": jax.random.PRNGKey(seed)}, x))
    variables["params"] = randomize(variables["params"])
    return Jitted(model), variables


# --- kernels ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [(3, 3, 3), (1, 3, 3), (3, 1, 1)])
def test_depthwise_shift_add_equals_grouped_conv(kernel):
    kt, kh, kw = kernel
    xp = jax.random.normal(jax.random.PRNGKey(0), (2, 4 + kt - 1, 5 + kh - 1, 6 + kw - 1, 7))
    w = jax.random.normal(jax.random.PRNGKey(1), (*kernel, 7))
    a = layers.depthwise_conv3d(xp, w, "shift_add")
    b = layers.depthwise_conv3d(xp, w, "grouped")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    ga = jax.grad(lambda w, x: jnp.sum(jnp.sin(layers.depthwise_conv3d(x, w, "shift_add"))), (0, 1))(w, xp)
    gb = jax.grad(lambda w, x: jnp.sum(jnp.sin(layers.depthwise_conv3d(x, w, "grouped"))), (0, 1))(w, xp)
    for u, v in zip(ga, gb, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)


def test_causal_patch_conv_equals_strided_lax_conv():
    """time kernel 3 / stride 2 (causal, replicate-padded) + 2x2 patches == a plain strided 3D conv."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8, 8, 3))
    mod = layers.CausalPatchConv(5, patch=2, time_kernel=3, time_stride=2)
    variables = mod.init(jax.random.PRNGKey(1), x)
    y = mod.apply(variables, x)
    kernel = nn.meta.unbox(
        variables["params"]["proj"]["kernel"]
    )  # (2*2*3*3, 5): rows ordered [dy, dx, tap, c]
    k_thwio = kernel.reshape(2, 2, 3, 3, 5).transpose(2, 0, 1, 3, 4)
    xp = jnp.concatenate([jnp.repeat(x[:, :1], 2, axis=1), x], axis=1)
    ref = jax.lax.conv_general_dilated(
        xp, k_thwio, (2, 2, 2), "VALID", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )
    ref = ref + nn.meta.unbox(variables["params"]["proj"]["bias"])
    assert y.shape == (2, 5, 4, 4, 5)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_space_to_depth_round_trip():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 8, 12, 3))
    np.testing.assert_array_equal(layers.depth_to_space(layers.space_to_depth(x, 4), 4), x)


# --- the model ----------------------------------------------------------------------------------------------


_BUILT = {}


def built(**kw):
    """One init per config for the whole module (init compiles the RNG for every parameter: the slow part)."""
    key = repr(sorted(kw.items()))
    if key not in _BUILT:
        _BUILT[key] = build(tiny_config(**kw), jnp.zeros((1, 5, 16, 16, 3)))
    return _BUILT[key]


def test_shapes_for_1_plus_4k_frames():
    c = tiny_config()
    assert compression(c) == (4, 4)
    model, variables = built()
    for frames in (1, 5, 9):
        x = jnp.zeros((2, frames, 16, 16, 3))
        out = model.apply(variables, x)
        assert out["recon"].shape == x.shape
        assert out["ids"].shape == (2, 1 + (frames - 1) // 4, 4, 4)
        assert out["z"].shape == (2, 1 + (frames - 1) // 4, 4, 4, c.z_channels)
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        model.apply(variables, jnp.zeros((1, 6, 16, 16, 3)))


def test_causal_in_time():
    c = tiny_config()
    model, variables = built()
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 9, 16, 16, 3), minval=-1, maxval=1)
    x2 = x.at[:, 5:].set(jax.random.uniform(jax.random.PRNGKey(9), (1, 4, 16, 16, 3)))  # change frames >= 5
    z1 = model.apply(variables, x, method="encode")[0]
    z2 = model.apply(variables, x2, method="encode")[0]
    # Latent j reads input frames <= 4j: latents 0 and 1 (frames 0..4) unchanged, latent 2 changed.
    np.testing.assert_allclose(z1[:, :2], z2[:, :2], rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(z1[:, 2] - z2[:, 2]).max()) > 1e-3
    r1, r2 = model.apply(variables, x)["recon"], model.apply(variables, x2)["recon"]
    np.testing.assert_allclose(r1[:, :5], r2[:, :5], rtol=1e-5, atol=1e-5)  # output frames 0..4
    assert float(jnp.abs(r1[:, 5:] - r2[:, 5:]).max()) > 1e-3
    # Decoder alone: changing latent frame 2 leaves output frames 0..4 alone.
    zq = jax.random.normal(jax.random.PRNGKey(3), (1, 3, 4, 4, c.z_channels))
    d1 = model.apply(variables, zq, method="decode")
    d2 = model.apply(variables, zq.at[:, 2].set(0.0), method="decode")
    np.testing.assert_allclose(d1[:, :5], d2[:, :5], rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(d1[:, 5:] - d2[:, 5:]).max()) > 1e-3


def test_straight_through_gradients_reach_the_encoder():
    model, variables = built()
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 5, 16, 16, 3), minval=-1, maxval=1)

    def loss(params):
        out = model.model.apply({**variables, "params": params}, x)
        return jnp.mean(jnp.abs(out["recon"] - x))  # reconstruction only: reaches the encoder only through VQ

    grads = jax.jit(jax.grad(loss))(variables["params"])
    enc = grads["encoder"]
    for name in ("stem", "stage0_block0", "down1", "conv_out"):
        assert float(global_norm(enc[name])) > 1e-6, f"no gradient at encoder/{name}"
    assert float(global_norm(grads["quantizer"]["in_proj"])) > 1e-6


def global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize("refine", [0, 4], ids=["head", "refine_conv"])
def test_chunked_encode_decode_equals_whole_clip(refine):
    """Streaming is exact, with the full-resolution refinement conv too (it is per frame: no causal state)."""
    model, variables = built(refine_channels=refine) if refine else built()
    if refine:
        assert variables["params"]["decoder"]["refine_conv"]["kernel"].shape == (1, 3, 3, 4, 4)
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 17, 16, 16, 3), minval=-1, maxval=1)
    z_whole, q_whole = model.apply(variables, x, method="encode")
    # Chunks: 1 + 4k first, then multiples of 4 frames; the causal state is carried in "cache".
    cache, zs, ids = {}, [], []
    for start, stop in ((0, 5), (5, 13), (13, 17)):
        (z, q), upd = model.apply(
            {**variables, "cache": cache}, x[:, start:stop], method="encode", mutable=("cache",)
        )
        cache = upd["cache"]
        zs.append(z)
        ids.append(q.ids)
    np.testing.assert_allclose(jnp.concatenate(zs, axis=1), z_whole, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(jnp.concatenate(ids, axis=1), q_whole.ids)

    whole = model.apply(variables, q_whole.ids, method="decode_ids")
    cache, frames = {}, []
    for start, stop in ((0, 2), (2, 3), (3, 5)):  # latent-frame chunks
        y, upd = model.apply(
            {**variables, "cache": cache}, q_whole.ids[:, start:stop], method="decode_ids", mutable=("cache",)
        )
        cache = upd["cache"]
        frames.append(y)
    chunked = jnp.concatenate(frames, axis=1)
    assert chunked.shape == whole.shape == x.shape
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-4)


def test_streaming_depthwise_3d_layer_equals_whole_clip():
    layer = layers.CausalDepthwiseConv3D((3, 3, 3))
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 9, 6, 6, 4))
    variables = layer.init(jax.random.PRNGKey(1), x)
    whole = layer.apply(variables, x)
    cache, parts = {}, []
    for start, stop in ((0, 1), (1, 5), (5, 9)):
        y, upd = layer.apply({**variables, "cache": cache}, x[:, start:stop], mutable=["cache"])
        cache = upd["cache"]
        parts.append(y)
    np.testing.assert_allclose(jnp.concatenate(parts, axis=1), whole, rtol=1e-5, atol=1e-5)


def test_remat_and_grouped_kernel_give_the_same_model():
    model, variables = built()
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 5, 16, 16, 3), minval=-1, maxval=1)
    ref = model.apply(variables, x)["recon"]
    for kw in (dict(remat=True), dict(depthwise_impl="grouped")):
        other = Jitted(VQVAE(tiny_config(**kw)))
        np.testing.assert_allclose(other.apply(variables, x)["recon"], ref, rtol=1e-4, atol=1e-4)


def test_mask_clip():
    cfg = mask_config()
    cfg.full_frame_prob, cfg.patch_prob = 1.0, 1.0
    x = jnp.ones((64, 5, 16, 16, 3))
    masked, frame = mask_clip(x, jax.random.PRNGKey(0), cfg)
    frame = np.asarray(frame)
    assert frame.min() >= 1 and frame.max() <= 4  # frame 0 never fully masked
    m = np.asarray(masked)
    for b in range(4):
        assert np.all(m[b, frame[b]] == cfg.fill)
    others = np.ones(m.shape[:2], bool)
    others[np.arange(64), frame] = False
    covered = (m[..., 0] == cfg.fill).mean(axis=(2, 3))[others]
    assert 0.01 < covered.mean() < 0.2  # two squares of 1/8..1/4 of the side
    cfg.full_frame_prob, cfg.patch_prob = 0.0, 0.0
    masked, frame = mask_clip(x, jax.random.PRNGKey(0), cfg)
    assert np.all(np.asarray(frame) == -1) and np.all(np.asarray(masked) == 1.0)


def test_code_noise_replaces_the_decoders_codes_in_training_only():
    # A learned codebook (no EMA update during the call), so the code vectors are the same for any input.
    config = tiny_config(code_noise=1.0)
    config.quantizer.ema, config.quantizer.restart = False, False
    clean = tiny_config()
    clean.quantizer.ema, clean.quantizer.restart = False, False
    x_a = jax.random.uniform(jax.random.PRNGKey(0), (1, 5, 16, 16, 3), minval=-1, maxval=1)
    x_b = jax.random.uniform(jax.random.PRNGKey(1), (1, 5, 16, 16, 3), minval=-1, maxval=1)
    model, variables = build(config, x_a)
    clean_model, _ = build(clean, x_a)
    rngs = {"code_noise": jax.random.PRNGKey(5)}

    def run(m, x, train):
        return m.apply(variables, x, train=train, mutable=("vq",), rngs=rngs)[0]

    noisy_a, noisy_b, clean_a = run(model, x_a, True), run(model, x_b, True), run(clean_model, x_a, True)
    # Every code replaced: the decoder's input no longer depends on the clip.
    np.testing.assert_array_equal(np.asarray(noisy_a["recon"]), np.asarray(noisy_b["recon"]))
    assert float(jnp.max(jnp.abs(noisy_a["recon"] - clean_a["recon"]))) > 1e-3
    # The quantizer's own output (ids, losses) is that of the true codes.
    np.testing.assert_array_equal(np.asarray(noisy_a["ids"]), np.asarray(clean_a["ids"]))
    np.testing.assert_allclose(float(noisy_a["vq_loss"]), float(clean_a["vq_loss"]), rtol=1e-6)
    # Inference ignores it.
    np.testing.assert_array_equal(
        np.asarray(run(model, x_a, False)["recon"]), np.asarray(run(clean_model, x_a, False)["recon"])
    )


def test_neighbour_code_noise_takes_each_code_from_within_one_step():
    ids = jnp.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # every position its own id
    out = np.asarray(neighbour_ids(ids, jax.random.PRNGKey(0)))
    b, t, h, w = np.unravel_index(out, ids.shape)
    grid_b, grid_t, grid_h, grid_w = np.indices(ids.shape)
    assert np.all(b == grid_b)
    for src, dst in ((t, grid_t), (h, grid_h), (w, grid_w)):
        assert np.abs(src - dst).max() == 1  # moved, and never by more than one step
    assert 0.5 < np.mean(out != np.asarray(ids)) < 1.0  # most positions take another's code
    config = tiny_config(code_noise_neighbour=1.0)
    config.quantizer.ema, config.quantizer.restart = False, False
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 5, 16, 16, 3), minval=-1, maxval=1)
    model, variables = build(config, x)
    rngs = {"code_noise": jax.random.PRNGKey(1)}
    noisy = model.apply(variables, x, train=True, mutable=("vq",), rngs=rngs)[0]["recon"]
    clean = model.apply(variables, x, train=False, mutable=("vq",))[0]["recon"]
    assert float(jnp.max(jnp.abs(noisy - clean))) > 1e-3
