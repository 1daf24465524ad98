"""Our Linen modules inside Flax NNX (`flax.nnx.bridge.ToNNX`): without any mesh, and under a user's mesh through
`sharding.use_mesh` (our logical-axis rules). The NNX forward equals Linen `apply` on the same parameters, and an
`nnx.Optimizer` step / `jax.value_and_grad` on the split `nnx.Param` state runs and changes the parameters."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.nnx import bridge

from motionaura_jax import config as config_lib
from motionaura_jax.configs.t2v import denoiser_config
from motionaura_jax.models.denoiser import SpectralDenoiser
from motionaura_jax.models.interop import linen_variables, to_nnx
from motionaura_jax.models.quantizer import VectorQuantizer
from motionaura_jax.models.text import bert, t5
from motionaura_jax.models.vqvae import VQVAE
from motionaura_jax.parallel import mesh as mesh_lib
from motionaura_jax.parallel import sharding

GRID = (2, 4, 4)


def _assert_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _changed(before, after) -> int:
    return sum(
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    )


def _check_placement(variables, module, inputs, mesh, **kwargs):
    """Every variable sits where our trainer would put it (`sharding.tree_shardings`); returns #sharded."""
    with sharding.use_mesh(mesh):
        boxed = jax.eval_shape(lambda *x: module.init(jax.random.PRNGKey(0), *x, **kwargs), *inputs)
    expected = sharding.tree_shardings(boxed, mesh)
    sharded = 0
    for value, want in zip(jax.tree.leaves(variables), jax.tree.leaves(expected), strict=True):
        assert value.sharding.is_equivalent_to(want, value.ndim), (value.shape, value.sharding, want)
        sharded += not value.sharding.is_fully_replicated
    return sharded


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


@pytest.fixture(scope="module")
def vae_config():
    return config_lib.load_config("experiments/vae.py:tiny").model


@pytest.fixture(scope="module")
def video():
    return jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 5, 16, 16, 3)), jnp.float32)


def _denoiser_inputs(cfg):
    rng = np.random.default_rng(0)
    return (
        jnp.asarray(rng.integers(0, cfg.vocab_size + 1, (2, *GRID)), jnp.int32),
        jnp.asarray([3, 9], jnp.int32),
        jnp.asarray([8.0, 12.0], jnp.float32),
        jnp.asarray(rng.normal(size=(2, 6, cfg.text_dim)), jnp.float32),
        jnp.asarray(np.arange(6)[None] < np.array([[3], [6]])),
    )


def test_tokenizer_plain_bridge_without_a_mesh(vae_config, video):
    """The report of issue 17, verbatim: this raised "An auto mesh context or metadata is required ..."."""
    model = bridge.ToNNX(VQVAE(vae_config), rngs=nnx.Rngs(0))
    bridge.lazy_init(model, video, train=False)
    variables = linen_variables(model)
    assert set(variables) == {"params", "vq"}
    out = nnx.jit(lambda m, x: m(x, train=False))(model, video)
    want = jax.jit(lambda v, x: VQVAE(vae_config).apply(v, x, train=False))(variables, video)
    _assert_equal(out, want)  # bit for bit: the same computation on the same parameters

    # Trained weights go into NNX as they are (e.g. a run's run.variables), through `to_nnx`.
    again = to_nnx(VQVAE(vae_config), video, variables=variables, train=False)
    _assert_equal(linen_variables(again), variables)
    with pytest.raises(ValueError, match="lack the collections"):
        to_nnx(VQVAE(vae_config), video, variables={"params": variables["params"]}, train=False)


def test_tokenizer_under_a_mesh_and_a_gradient_step(vae_config, video, mesh):
    module = VQVAE(vae_config)
    model = to_nnx(module, video, train=False, mesh=mesh)  # placed by our rules on the user's mesh
    variables = linen_variables(model)
    assert _check_placement(variables, module, (video,), mesh, train=False) > 10
    out = nnx.jit(lambda m, x: m(x, train=False))(model, video)
    with sharding.use_mesh(mesh):
        want = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, video)
    np.testing.assert_allclose(np.asarray(out["recon"]), np.asarray(want["recon"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out["ids"]), np.asarray(want["ids"]))
    print(
        f"\ntokenizer on the mesh: max |NNX - Linen| recon {np.abs(out['recon'] - want['recon']).max():.3g}"
    )

    # MaxText-style: split off the nnx.Param state, jax.value_and_grad on it, an SGD update, merge back.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def step(params, rest, x):
        def loss(p, r):
            return jnp.mean((nnx.merge(graphdef, p, r)(x, train=False)["recon"] - x) ** 2)

        value, grads = jax.value_and_grad(loss)(params, rest)
        return value, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

    loss, new_params = step(params, rest, video)
    assert np.isfinite(float(loss))
    nnx.update(model, new_params)
    changed = _changed(variables["params"], linen_variables(model)["params"])
    print(
        f"tokenizer value_and_grad step: loss {float(loss):.4f}, {changed} of "
        f"{len(jax.tree.leaves(variables['params']))} parameter arrays changed"
    )
    assert changed > 10


@pytest.mark.parametrize("with_mesh", [False, True], ids=["no_mesh", "mesh"])
def test_denoiser_bridge_equals_linen_and_an_optimizer_step(with_mesh, mesh):
    cfg = denoiser_config("tiny")
    inputs = _denoiser_inputs(cfg)
    module = SpectralDenoiser(cfg)
    model = bridge.ToNNX(module, rngs=nnx.Rngs(0))
    if with_mesh:
        with sharding.use_mesh(mesh):  # the one helper: our rules on the user's mesh
            bridge.lazy_init(model, *inputs)
        assert _check_placement(linen_variables(model), module, inputs, mesh) > 5
    else:
        bridge.lazy_init(model, *inputs)
    variables = linen_variables(model)
    logits = nnx.jit(lambda m, *x: m(*x))(model, *inputs)
    if with_mesh:
        with sharding.use_mesh(mesh):
            want = jax.jit(module.apply)(variables, *inputs)
        np.testing.assert_allclose(np.asarray(logits), np.asarray(want), rtol=1e-5, atol=1e-5)
        print(f"\ndenoiser on the mesh: max |NNX - Linen| logits {np.abs(logits - want).max():.3g}")
    else:
        _assert_equal(logits, jax.jit(module.apply)(variables, *inputs))

    if with_mesh:
        return  # the training step under a mesh: the tokenizer test's jax.value_and_grad on the Param state
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, ids, *rest):
        def loss_fn(model):
            logits = model(ids, *rest)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, jnp.minimum(ids, cfg.vocab_size - 1)
            ).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    loss = train_step(model, optimizer, *inputs)
    assert np.isfinite(float(loss))
    after = linen_variables(model)["params"]
    # AdaLN-Zero starts every block as the identity, so at init only the parameters outside the blocks (and the
    # zero-initialised modulations) get a gradient; adam moves each of those.
    print(
        f"\ndenoiser nnx.Optimizer step: loss {float(loss):.4f}, {_changed(variables['params'], after)} of "
        f"{len(jax.tree.leaves(after))} parameter arrays changed"
    )
    assert _changed(variables["params"], after) >= 5
    assert _changed(variables["params"]["head"], after["head"]) == 2


def test_quantizer_and_text_encoders_wrap_with_and_without_a_mesh(mesh):
    qcfg = config_lib.load_config("experiments/vae.py:tiny").model.quantizer
    z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 8)), jnp.float32)
    t5_cfg = t5.t5_config("tiny")
    cases = [
        (VectorQuantizer(qcfg), (z,), {"train": False}),
        (t5.T5Encoder(t5_cfg), (jnp.ones((2, 6), jnp.int32), jnp.ones((2, 6), bool)), {}),
        (
            bert.BertEncoder(bert.BertConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                                             intermediate_size=64, max_position_embeddings=16)),
            (jnp.ones((2, 6), jnp.int32), jnp.ones((2, 6), bool)),
            {},
        ),
    ]  # fmt: skip
    for i, (module, inputs, kwargs) in enumerate(cases):
        for m in (None, mesh) if i == 0 else (mesh,):  # no mesh: the same path for every module
            model = bridge.ToNNX(module, rngs=nnx.Rngs(0))
            with sharding.use_mesh(m) if m is not None else contextlib.nullcontext():
                bridge.lazy_init(model, *inputs, **kwargs)
            variables = linen_variables(model)
            got = model(*inputs, **kwargs)  # small modules: eager, no compile
            want = module.apply(variables, *inputs, **kwargs)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
            if m is not None:
                _check_placement(variables, module, inputs, mesh, **kwargs)


def test_linen_boxes_keep_their_names(vae_config, video):
    """The Linen side still sees `nn.LogicallyPartitioned` boxes with the logical names (trainer unchanged)."""
    import flax.linen as nn

    boxed = jax.eval_shape(lambda x: VQVAE(vae_config).init(jax.random.PRNGKey(0), x, train=False), video)
    kernel = boxed["params"]["encoder"]["stem"]["proj"]["kernel"]
    assert isinstance(kernel, nn.LogicallyPartitioned) and kernel.names[-1] is not None
    assert isinstance(kernel, sharding.LogicallyPartitioned)


def test_use_mesh_asks_for_auto_axes():
    """jax.make_mesh's default axes are Explicit; the helper says how to build a mesh it can use."""
    explicit = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    with pytest.raises(sharding.ShardingRuleError, match=r"\['data', 'fsdp'\] are Explicit.*AxisType.Auto"):
        with sharding.use_mesh(explicit):
            pass
