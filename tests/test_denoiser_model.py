"""SpectralDenoiser: interface, text padding, AdaLN-Zero identity, scan == unrolled, sharded, bf16 grads."""

import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding

from motionaura_jax.configs.t2v import denoiser_config
from motionaura_jax.models import denoiser as den
from motionaura_jax.parallel import mesh as mesh_lib
from motionaura_jax.parallel import sharding

GRID = (2, 4, 4)
MODES = ("qkv_fft2", "fnet_mix", "global_filter", "filter3d", "none")


def tiny(mode="qkv_fft2", **overrides):
    return denoiser_config("tiny", spectral_mode=mode, **overrides)


def make_inputs(cfg, batch=4, text_len=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.vocab_size + 1, size=(batch, *GRID)).astype(np.int32)
    t = rng.integers(1, 100, size=(batch,)).astype(np.int32)
    fps = rng.choice([8.0, 12.0, 24.0], size=(batch,)).astype(np.float32)
    text = rng.normal(size=(batch, text_len, cfg.text_dim)).astype(np.float32)
    lengths = np.arange(batch) % (text_len - 1) + 2  # 2, 3, ... real tokens, the rest padding
    mask = np.arange(text_len)[None, :] < lengths[:, None]
    return ids, t, fps, text, mask


def init_params(cfg, inputs):
    return jax.jit(den.SpectralDenoiser(cfg).init)(jax.random.key(0), *inputs)["params"]


@functools.cache
def _abstract_params(cfg_json, shapes):
    import ml_collections

    cfg = ml_collections.ConfigDict(json.loads(cfg_json))
    args = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
    return jax.eval_shape(den.SpectralDenoiser(cfg).init, jax.random.key(0), *args)["params"]


def abstract_params(cfg, inputs):
    """Boxed parameter shapes with their logical names, from `eval_shape` (no init compile)."""
    return _abstract_params(cfg.to_json(), tuple((x.shape, x.dtype) for x in inputs))


def random_params(cfg, inputs, seed=1, scale=0.3):
    """Every parameter random (gates and zero-init projections included) so that no test passes vacuously;
    norm scales around 1."""
    rng = np.random.default_rng(seed)
    flat = jax.tree_util.tree_leaves_with_path(sharding.unbox(abstract_params(cfg, inputs)))
    leaves = []
    for path, x in flat:
        base = 1.0 if getattr(path[-1], "key", "") == "scale" else 0.0
        leaves.append((base + scale * rng.normal(size=x.shape)).astype(np.float32))
    return jax.tree.unflatten(jax.tree.structure(sharding.unbox(abstract_params(cfg, inputs))), leaves)


def randomize(params, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: np.asarray(x) + scale * rng.normal(size=x.shape).astype(np.float32), sharding.unbox(params)
    )


@functools.cache
def jitted_apply(cfg_json):
    import ml_collections

    cfg = ml_collections.ConfigDict(json.loads(cfg_json))
    return jax.jit(lambda p, *a: den.SpectralDenoiser(cfg).apply({"params": p}, *a))


def forward(cfg, params, inputs):
    return jitted_apply(cfg.to_json())(params, *inputs)


@pytest.mark.parametrize("mode", MODES)
def test_shapes_and_padded_text_tokens_do_not_matter(mode):
    cfg = tiny(mode)
    inputs = make_inputs(cfg)
    params = random_params(cfg, inputs)
    logits = forward(cfg, params, inputs)
    assert logits.shape == (4, *GRID, cfg.vocab_size) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    ids, t, fps, text, mask = inputs
    padded = np.where(mask[..., None], text, 50.0 * np.random.default_rng(9).normal(size=text.shape))
    np.testing.assert_allclose(
        np.asarray(forward(cfg, params, (ids, t, fps, padded.astype(np.float32), mask))),
        np.asarray(logits),
        atol=1e-4,
    )
    # ... while a real token, the timestep and the FPS all do.
    changed = text.copy()
    changed[:, 0] += 1.0
    for other in ((ids, t, fps, changed, mask), (ids, t + 7, fps, text, mask), (ids, t, fps * 2, text, mask)):
        assert np.abs(np.asarray(forward(cfg, params, other)) - np.asarray(logits)).max() > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_adaln_zero_block_is_identity_at_init(mode):
    cfg = tiny(mode)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 32, cfg.width)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, cfg.width)), jnp.float32)
    text = jnp.asarray(rng.normal(size=(2, 5, cfg.width)), jnp.float32)
    mask = jnp.ones((2, 5), bool)
    block = den.DenoiserBlock(cfg, GRID)
    variables = jax.jit(block.init)(jax.random.key(0), x, c, text, mask)
    apply = jax.jit(block.apply)
    out, _ = apply(variables, x, c, text, mask)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-6)
    moved = {"params": randomize(variables["params"])}
    assert np.abs(np.asarray(apply(moved, x, c, text, mask)[0]) - np.asarray(x)).max() > 1e-2


def unstack(scanned, depth):
    unrolled = dict(scanned)
    blocks = unrolled.pop("blocks")
    for i in range(depth):
        unrolled[f"block_{i}"] = jax.tree.map(lambda x, i=i: x[i], blocks)
    return unrolled


def test_scan_equals_unrolled_with_the_same_params():
    cfg_scan = tiny()
    cfg_unrolled = tiny(scan_layers=False)
    inputs = make_inputs(cfg_scan)
    scanned = random_params(cfg_scan, inputs)
    unrolled = unstack(scanned, cfg_scan.depth)
    assert jax.tree.structure(unrolled) == jax.tree.structure(
        sharding.unbox(abstract_params(cfg_unrolled, inputs))
    )
    np.testing.assert_allclose(
        np.asarray(forward(cfg_unrolled, unrolled, inputs)),
        np.asarray(forward(cfg_scan, scanned, inputs)),
        atol=1e-4,
    )
    # The scanned stack's parameters carry the "layers" axis first.
    boxed = abstract_params(cfg_scan, inputs)
    assert boxed["blocks"]["ffn"]["fc_in"]["kernel"].names == ("layers", "embed", "mlp")


@pytest.mark.parametrize(
    "mode,mesh_shape,remat",
    [
        ("qkv_fft2", {"data": 2, "fsdp": 2, "tensor": 2}, False),
        ("global_filter", {"data": 2, "fsdp": 2, "tensor": 2}, False),
        ("qkv_fft2", {"data": 2, "tensor": 2, "sequence": 2}, True),  # tokens split over sequence; remat
    ],
)
def test_sharded_forward_equals_unsharded(mode, mesh_shape, remat):
    cfg = tiny(mode, remat=remat)
    inputs = make_inputs(cfg)
    params = random_params(cfg, inputs)
    want = forward(cfg, params, inputs)

    mesh = mesh_lib.make_mesh(mesh_shape)
    param_shardings = sharding.unbox(sharding.tree_shardings(abstract_params(cfg, inputs), mesh))
    assert param_shardings["blocks"]["ffn"]["fc_in"]["kernel"].spec[-1] == "tensor"
    sharded_params = jax.device_put(params, param_shardings)
    batch = NamedSharding(mesh, sharding.logical_to_spec(("act_batch",), (4,), mesh))
    sharded_inputs = jax.device_put(inputs, batch)
    model = den.SpectralDenoiser(cfg)
    with sharding.use_mesh(mesh):
        got = jax.jit(lambda p, *a: model.apply({"params": p}, *a), out_shardings=batch)(
            sharded_params, *sharded_inputs
        )
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)


def test_bf16_gradients_are_finite():
    cfg = tiny("qkv_fft2", dtype="bfloat16", remat=True)
    inputs = make_inputs(cfg)
    params = random_params(cfg, inputs, scale=0.1)
    targets = jnp.asarray(np.random.default_rng(5).integers(0, cfg.vocab_size, size=(4, *GRID)))
    model = den.SpectralDenoiser(cfg)

    def loss_fn(p):
        logits = model.apply({"params": p}, *inputs)
        assert logits.dtype == jnp.float32
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    assert np.isfinite(float(loss))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert g.dtype == jnp.float32, path
        assert np.all(np.isfinite(np.asarray(g))), path
    assert float(jnp.linalg.norm(grads["blocks"]["self_attn"]["query"]["kernel"])) > 0


def test_config_errors_are_clear():
    cfg = tiny()
    inputs = make_inputs(cfg)
    with pytest.raises(ValueError, match="spectral_mode"):
        init_params(tiny("fourier"), inputs)
    with pytest.raises(ValueError, match="text_dim"):
        init_params(tiny(text_dim=7), inputs)
    with pytest.raises(ValueError, match="size"):
        denoiser_config("XL")
    with pytest.raises(ValueError, match="unknown field"):
        denoiser_config("S", widht=3)


def test_parameter_counts_from_eval_shape():
    cfg = tiny("global_filter")
    inputs = make_inputs(cfg)
    real = sum(x.size for x in jax.tree.leaves(sharding.unbox(init_params(cfg, inputs))))
    assert den.count_params(cfg, GRID, text_len=6) == real
    large = den.count_params(denoiser_config("L"))  # abstract: nothing is allocated
    small = den.count_params(denoiser_config("S"))
    assert 4e9 < large < 8e9 and 3e8 < small < 1e9


def test_dropout_only_when_not_deterministic():
    cfg = tiny("none", dropout=0.5)
    inputs = make_inputs(cfg)
    params = random_params(cfg, inputs)
    model = den.SpectralDenoiser(cfg)

    @jax.jit
    def run(p, key):
        train = model.apply({"params": p}, *inputs, deterministic=False, rngs={"dropout": key})
        return train, model.apply({"params": p}, *inputs)

    a, eval_a = run(params, jax.random.key(1))
    b, eval_b = run(params, jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
    assert np.abs(np.asarray(a) - np.asarray(eval_a)).max() > 1e-3


def test_patchify_and_unpatchify_are_inverse_orderings():
    """The head's block-of-codes layout is the embedding's: unpatchify(patchify(x)) == x for every patch."""
    x = jnp.arange(2 * 2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 2, 4, 6, 3)
    for patch in ((1, 2, 2), (2, 1, 2), (2, 2, 3)):
        tokens = den.patchify(x, patch, lambda y: y)
        assert tokens.shape == (2, x[0, ..., 0].size // np.prod(patch), np.prod(patch) * 3)
        np.testing.assert_array_equal(den.unpatchify(tokens, (2, 4, 6), patch, 3), x)


def test_patched_denoiser_predicts_every_code_from_its_block():
    """patch (1, 2, 2): logits keep the code grid's shape, and changing one code changes the logits of all
    four codes of its 2x2 block (one token reads and predicts the whole block)."""
    cfg = tiny(patch_size=(1, 2, 2))
    inputs = make_inputs(cfg, batch=2)
    params = random_params(cfg, inputs)
    logits = forward(cfg, params, inputs)
    assert logits.shape == (2, *GRID, cfg.vocab_size) and np.isfinite(logits).all()
    ids = np.array(inputs[0])
    ids[:, 0, 0, 0] = (ids[:, 0, 0, 0] + 1) % cfg.vocab_size
    moved = forward(cfg, params, (ids, *inputs[1:]))
    changed = np.abs(np.asarray(moved - logits)).max(axis=-1) > 1e-6
    assert changed[:, 0, :2, :2].all()  # the whole block of the changed code
    with pytest.raises(ValueError, match="not divisible by model.patch_size"):
        forward(tiny(patch_size=(1, 3, 3)), params, inputs)


def test_pooled_text_condition_reaches_tokens_without_cross_attention():
    """text_pool_cond: the masked mean of the text (padding ignored) goes through an MLP into c; with the
    cross-attention output zeroed the caption still moves the logits, through c alone."""
    cfg = tiny(text_pool_cond=True)
    inputs = make_inputs(cfg)
    ids, t, fps, text, mask = inputs
    params = random_params(cfg, inputs)
    assert set(params["text_pool"]) == {"in", "out"} and "text_pool" not in random_params(tiny(), inputs)
    pooled = den.PooledText(cfg.width)
    pool_params = {"params": params["text_pool"]}
    want_mean = (text * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    h = want_mean @ params["text_pool"]["in"]["kernel"] + params["text_pool"]["in"]["bias"]
    want = jax.nn.silu(h) @ params["text_pool"]["out"]["kernel"] + params["text_pool"]["out"]["bias"]
    np.testing.assert_allclose(np.asarray(pooled.apply(pool_params, text, mask)), want, rtol=1e-4, atol=1e-4)
    no_cross = jax.tree_util.tree_map_with_path(
        lambda path, x: np.zeros_like(x) if "cross" in jax.tree_util.keystr(path) else x, params
    )
    logits = np.asarray(forward(cfg, no_cross, inputs))
    changed = text.copy()
    changed[:, 0] += 1.0
    assert np.abs(np.asarray(forward(cfg, no_cross, (ids, t, fps, changed, mask))) - logits).max() > 1e-3
    plain = tiny()
    plain_params = {k: v for k, v in no_cross.items() if k != "text_pool"}
    plain_logits = np.asarray(forward(plain, plain_params, inputs))
    assert (
        np.abs(np.asarray(forward(plain, plain_params, (ids, t, fps, changed, mask))) - plain_logits).max()
        < 1e-5
    )


def test_chunked_self_attention_equals_whole_with_less_memory():
    """model.attention_chunk: the same logits and gradients (chunks that do not divide the rows included),
    and the compiled backward pass keeps less temporary memory than with the whole L x L map; the plain core
    (spectral_mode=none) gives the same forward chunked or not."""
    grid = (2, 16, 8)  # 256 tokens: 129 query frequencies (qkv_fft2) or 256 rows, chunked by 24
    whole, chunked = tiny(), tiny(attention_chunk=24)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, whole.vocab_size + 1, size=(2, *grid)).astype(np.int32)
    _, t, fps, text, mask = make_inputs(whole, batch=2)
    inputs = (ids, t, fps, text, mask)
    params = randomize(jax.jit(den.SpectralDenoiser(whole).init)(jax.random.key(0), *inputs)["params"])

    def loss(cfg):
        return lambda p: (den.SpectralDenoiser(cfg).apply({"params": p}, *inputs) ** 2).mean()

    compiled = [jax.jit(jax.value_and_grad(loss(c))).lower(params).compile() for c in (whole, chunked)]
    (a, ga), (b, gb) = (c(params) for c in compiled)
    np.testing.assert_allclose(float(b), float(a), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(ga), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-6)
    temp = [c.memory_analysis().temp_size_in_bytes for c in compiled]
    assert temp[1] < 0.8 * temp[0], temp
    plain = [tiny("none"), tiny("none", attention_chunk=24)]
    np.testing.assert_allclose(*(np.asarray(forward(c, params, inputs)) for c in plain), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["none", "qkv_fft2", "filter3d"])
def test_a_batch_of_one_equals_its_row_of_a_batch_without_reductions_of_it(mode):
    """At batch 1 the denoiser runs its Dense, LayerNorm, AdaLN and attention maps without the batch axis
    (`unit_batch_squeezed`, `over_unit_batch`): the same logits and gradients as sample 0 of a batch of 2, and
    the compiled backward pass reduces no (1, L, D) array over its tokens nor a (1, H, L, S) map over its keys
    (the forms XLA:CPU runs ~30x and ~2x slower)."""
    cfg = tiny(mode, scan_layers=False)
    inputs = make_inputs(cfg, batch=2)
    params = random_params(cfg, inputs)
    one = tuple(x[:1] for x in inputs)

    def loss(p, args, weights):
        logits = den.SpectralDenoiser(cfg).apply({"params": p}, *args)
        return jnp.sum(jnp.mean(logits**2, axis=(1, 2, 3, 4)) * weights)

    grad = jax.jit(jax.value_and_grad(loss))
    (l1, g1), (l2, g2) = grad(params, one, jnp.ones(1)), grad(params, inputs, jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=2e-6)
    hlo = jax.jit(jax.grad(loss)).lower(params, one, jnp.ones(1)).compile().as_text()
    token_axis_reductions = re.findall(rf"= f32\[1,{cfg.width}\]\S* reduce\([^\n]*dimensions={{1}}", hlo)
    assert not token_axis_reductions
    map_reductions = re.findall(rf"= f32\[1,{cfg.heads},\d+\]\S* reduce\(", hlo)
    assert not map_reductions
