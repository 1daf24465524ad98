"""LoRA on the real SpectralDenoiser: merged == adapter forward (scanned and unrolled), frozen base stays
bit-identical while the adapters train, gradients/optimizer state for adapters only, size at the default rank,
save -> load, and sharded (data x fsdp x tensor) training == unsharded."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding

from motionaura_jax.configs.t2v import denoiser_config
from motionaura_jax.models import denoiser as den
from motionaura_jax.models import lora
from motionaura_jax.parallel import mesh as mesh_lib
from motionaura_jax.parallel import sharding
from motionaura_jax.train.state import TrainState, make_optimizer

GRID = (2, 4, 4)
BATCH = 4
STEPS = 3


def make_inputs(cfg, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.vocab_size + 1, size=(BATCH, *GRID)).astype(np.int32)
    t = rng.integers(1, 100, size=(BATCH,)).astype(np.int32)
    fps = rng.choice([8.0, 12.0, 24.0], size=(BATCH,)).astype(np.float32)
    text = rng.normal(size=(BATCH, 6, cfg.text_dim)).astype(np.float32)
    mask = np.arange(6)[None, :] < (np.arange(BATCH) % 5 + 2)[:, None]
    targets = rng.integers(0, cfg.vocab_size, size=(BATCH, *GRID)).astype(np.int32)
    return (ids, t, fps, text, mask), targets


def abstract_base(cfg):
    """Boxed parameter shapes and logical names, from eval_shape (no init compile)."""
    inputs = den.example_inputs(cfg, 1, GRID, 6, abstract=True)
    return jax.eval_shape(den.SpectralDenoiser(cfg).init, jax.random.key(0), *inputs)["params"]


def random_like(abstract, seed, scale=0.1):
    """Every leaf random (AdaLN gates and zero-init projections too, so no check passes vacuously)."""
    rng = np.random.default_rng(seed)
    plain = sharding.unbox(abstract)

    def one(path, x):
        base = 1.0 if getattr(path[-1], "key", "") == "scale" else 0.0
        return (base + scale * rng.normal(size=x.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(one, plain)


def trained_adapters(abstract, lcfg, seed):
    """init_lora's adapters with B moved off zero (at init B = 0 and merged == base trivially)."""
    adapters = sharding.unbox(lora.init_lora(jax.random.key(seed), abstract, lcfg))
    rng = np.random.default_rng(seed)

    def one(path, x):
        noise = 0.1 * rng.normal(size=x.shape) if path[-1].key == "b" else 0.0
        return (np.asarray(x) + noise).astype(np.float32)

    return jax.tree_util.tree_map_with_path(one, adapters)


@functools.cache
def setup(scan_layers=True):
    cfg = denoiser_config("tiny", scan_layers=scan_layers)
    abstract = abstract_base(cfg)
    lcfg = lora.denoiser_lora_config(cfg)
    return cfg, abstract, lcfg, random_like(abstract, 1), trained_adapters(abstract, lcfg, 2)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_merged_forward_equals_adapter_forward(scan_layers):
    cfg, abstract, lcfg, base, adapters = setup(scan_layers)
    targets = lora.find_targets(abstract, lcfg)
    prefix = "blocks" if scan_layers else "block_1"
    names = {"/".join(p) for p in targets}
    for module in (
        "self_attn/query",
        "self_attn/out",
        "cross_attn/key",
        "cross_attn/out",
        "ffn/fc_in",
        "ffn/fc_out",
    ):
        assert f"{prefix}/{module}/kernel" in names
    assert len(targets) == (10 if scan_layers else 10 * cfg.depth)
    if scan_layers:
        assert targets[("blocks", "self_attn", "out", "kernel")].lead == 1
    model = den.SpectralDenoiser(cfg)
    inputs, _ = make_inputs(cfg)

    @jax.jit
    def forwards(base, adapters):
        merged = model.apply({"params": lora.merge(base, adapters, lcfg)}, *inputs)
        with lora.adapters_active(lcfg):
            adapter = model.apply({"params": lora.inject(base, adapters)}, *inputs)
        return merged, adapter, model.apply({"params": base}, *inputs)

    merged, adapter, plain = (np.asarray(x) for x in forwards(base, adapters))
    diff = np.abs(merged - adapter).max()
    print(
        f"scan={scan_layers}: merged vs adapter forward max |diff| {diff:.2e} (|logits| max {np.abs(merged).max():.2f})"
    )
    assert diff <= 1e-5
    assert np.abs(merged - plain).max() > 1e-2  # the adapters do change the output
    # unmerge undoes merge (to rounding); zero B adapters change nothing.
    restored = lora.unmerge(lora.merge(base, adapters, lcfg), adapters, lcfg)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), restored, base)


def test_adapter_forward_on_dense_densegeneral_conv():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x_bhwc):
            x = nn.Conv(8, (3, 3), strides=(2, 2), padding="SAME", name="conv")(x_bhwc)
            x = x.reshape(x.shape[0], -1, 8)
            h = nn.DenseGeneral((2, 4), name="to_heads")(x)
            x = nn.DenseGeneral(8, axis=(-2, -1), name="from_heads")(h)
            return nn.Dense(5, name="dense")(jax.nn.gelu(x))

    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    params = jax.jit(Net().init)(jax.random.key(0), x)["params"]
    lcfg = lora.LoraConfig(rank=2, alpha=4.0, targets=r".*/kernel", single_input_axis=r"to_heads/kernel")
    targets = lora.find_targets(params, lcfg)
    assert targets[("to_heads", "kernel")].n_in == 1 and targets[("from_heads", "kernel")].n_in == 2
    assert targets[("conv", "kernel")].n_in == 3  # (kh, kw, cin) -> cout
    adapters = trained_adapters(params, lcfg, 3)

    @jax.jit
    def forwards(params, adapters):
        with lora.adapters_active(lcfg):
            adapter = Net().apply({"params": lora.inject(params, adapters)}, x)
        return Net().apply({"params": lora.merge(params, adapters, lcfg)}, x), adapter

    merged, adapter = forwards(params, adapters)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(adapter), atol=1e-5)
    assert lcfg.scale == 2.0


def _train_config():
    """The train group's defaults (every key make_optimizer reads) with this file's optimizer settings."""
    from motionaura_jax.configs import base

    train = base.get_config("t2v").train
    train.update(
        dict(
            lr=1e-2,
            schedule="constant",
            b1=0.9,
            b2=0.999,
            weight_decay=0.01,
            grad_clip=1.0,
            warmup=0,
            steps=STEPS,
        )
    )
    return train


def _loss(model, params, inputs, targets):
    logits = model.apply({"params": params}, *inputs)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))


def run_lora_training(mesh=None):
    """STEPS AdamW steps on the adapters of a frozen tiny denoiser; returns (losses, state, grads, base)."""
    cfg, abstract, lcfg, base, _ = setup(True)
    model = den.SpectralDenoiser(cfg)
    inputs, targets = make_inputs(cfg, seed=3)
    adapters = sharding.unbox(lora.init_lora(jax.random.key(4), abstract, lcfg))
    tx = make_optimizer(_train_config())
    loss_fn = lora.with_merged(functools.partial(_loss, model), lcfg)

    def step(state, base, inputs, targets):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, base, inputs, targets)
        state, _ = state.apply_gradients(grads, tx)
        return state, loss, grads

    if mesh is not None:
        base_sh = sharding.unbox(sharding.tree_shardings(abstract, mesh))
        abstract_lora = jax.eval_shape(
            functools.partial(lora.init_lora, cfg=lcfg), jax.random.key(0), abstract
        )
        lora_sh = sharding.unbox(sharding.tree_shardings(abstract_lora, mesh))
        batch_sh = NamedSharding(mesh, sharding.logical_to_spec(("act_batch",), (BATCH,), mesh))
        base = jax.device_put(base, base_sh)
        adapters = jax.device_put(adapters, lora_sh)
        inputs, targets = jax.device_put((inputs, targets), batch_sh)
    state = TrainState.create(adapters, tx)
    losses = []
    with sharding.use_mesh(mesh) if mesh is not None else _nullcontext():
        jitted = jax.jit(step)
        for _ in range(STEPS):
            state, loss, grads = jitted(state, base, inputs, targets)
            losses.append(float(loss))
    return losses, state, grads, base, adapters


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.fixture(scope="module")
def unsharded_run():
    _, _, _, base, _ = setup(True)
    before = jax.tree.map(np.array, base)  # host copies
    return before, run_lora_training()


def test_adapter_forward_through_a_folded_output_projection():
    """Cross-attention to a short text projects its values instead of its output (`attention.fold_output`):
    the adapter on `out` folds with it, so the adapter forward still equals the merged one."""
    from motionaura_jax.models import attention as attn

    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 32, 64)), jnp.float32)
    ctx = jnp.asarray(rng.normal(size=(2, 3, 64)), jnp.float32)
    mask = jnp.asarray([[1, 1, 0], [1, 1, 1]], bool)
    assert attn.output_fold_pays(32, 3, 2, 32, 64)
    for spectral in (False, True):
        module = attn.MultiHeadAttention(num_heads=2, head_dim=32, spectral=spectral)
        params = sharding.unbox(module.init(jax.random.key(0), x, ctx, key_mask_bs=mask))["params"]
        lcfg = lora.LoraConfig(
            rank=2,
            alpha=4.0,
            targets=r"(query|key|value|out)/kernel",
            single_input_axis=r"(query|key|value)/kernel",
        )
        adapters = trained_adapters(params, lcfg, 5)

        def forwards(params, adapters, module=module, lcfg=lcfg):
            with lora.adapters_active(lcfg):
                adapter = module.apply({"params": lora.inject(params, adapters)}, x, ctx, key_mask_bs=mask)
            merged = module.apply({"params": lora.merge(params, adapters, lcfg)}, x, ctx, key_mask_bs=mask)
            return merged, adapter, module.apply({"params": params}, x, ctx, key_mask_bs=mask)

        merged, adapter, base = (np.asarray(y) for y in jax.jit(forwards)(params, adapters))
        np.testing.assert_allclose(adapter, merged, atol=1e-5, rtol=1e-5)
        assert np.abs(merged - base).max() > 1e-2  # the adapters, the one on `out` included, change it


def test_training_updates_adapters_only(unsharded_run):
    before, (losses, state, grads, base, adapters0) = unsharded_run
    cfg, abstract, lcfg, _, _ = setup(True)
    print(f"LoRA training losses: {[round(v, 4) for v in losses]}")
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # The frozen base is bit-identical after training.
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, base), before)
    # Gradients and optimizer state exist for the adapter leaves only, and the adapters moved.
    assert jax.tree.structure(grads) == jax.tree.structure(state.params) == jax.tree.structure(adapters0)
    assert float(np.abs(np.asarray(state.params["blocks"]["ffn"]["fc_out"]["kernel"]["b"])).max()) > 0
    adam = [
        s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu")
    ]
    assert len(adam) == 1 and jax.tree.structure(adam[0].mu) == jax.tree.structure(state.params)
    tx = make_optimizer(_train_config())
    lora_bytes = lora.tree_bytes(state.opt_state)
    full_bytes = lora.tree_bytes(jax.eval_shape(tx.init, sharding.unbox(abstract)))
    print(
        f"optimizer state, tiny denoiser: full fine-tune {full_bytes} B, LoRA r={lcfg.rank} {lora_bytes} B "
        f"({lora_bytes / full_bytes:.1%})"
    )
    assert lora_bytes < 0.05 * full_bytes


def test_sharded_lora_training_equals_unsharded(unsharded_run):
    _, (ref_losses, ref_state, _, _, _) = unsharded_run
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    losses, state, _, base, adapters = run_lora_training(mesh)
    # The adapters are sharded like their kernels: A on the kernel's input axis, B on its output axis.
    query = adapters["blocks"]["self_attn"]["query"]["kernel"]
    assert query["a"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
    assert query["b"].sharding.spec == jax.sharding.PartitionSpec(None, None, "tensor")
    assert base["blocks"]["self_attn"]["query"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(
        None, "fsdp", "tensor"
    )
    fc_in = adapters["blocks"]["ffn"]["fc_in"]["kernel"]
    assert fc_in["a"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
    assert fc_in["b"].sharding.spec == jax.sharding.PartitionSpec(None, None, "tensor")
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
        jax.device_get(state.params),
        jax.device_get(ref_state.params),
    )


@pytest.mark.parametrize(
    "name,overrides",
    [("tiny", {}), ("quickstart", dict(width=128, depth=4, heads=4, vocab_size=1024, text_dim=384))],
)
def test_adapters_are_a_small_fraction_at_the_default_rank(name, overrides):
    cfg = denoiser_config("tiny", **overrides)
    abstract = abstract_base(cfg)
    lcfg = lora.denoiser_lora_config(cfg)
    adapters = jax.eval_shape(functools.partial(lora.init_lora, cfg=lcfg), jax.random.key(0), abstract)
    n_base, n_lora = lora.param_count(abstract), lora.param_count(adapters)
    tx = make_optimizer(_train_config())
    full_opt = lora.tree_bytes(jax.eval_shape(tx.init, sharding.unbox(abstract)))
    lora_opt = lora.tree_bytes(jax.eval_shape(tx.init, sharding.unbox(adapters)))
    print(
        f"{name} (width {cfg.width}, depth {cfg.depth}): denoiser {n_base} params, LoRA r={lcfg.rank} "
        f"{n_lora} ({n_lora / n_base:.2%}); AdamW state full {full_opt / 1e6:.2f} MB vs LoRA {lora_opt / 1e6:.3f} MB"
    )
    assert n_lora <= 0.05 * n_base
    assert lcfg.rank == lora.default_rank(cfg.width) and lcfg.scale == 1.0


def test_save_load_same_outputs(tmp_path):
    cfg, abstract, lcfg, base, adapters = setup(True)
    # As after training: plain adapters (a train state's), boxed again with init_lora's logical names.
    names_like = jax.eval_shape(functools.partial(lora.init_lora, cfg=lcfg), jax.random.key(0), abstract)
    boxed = lora.with_names(jax.tree.map(jnp.asarray, adapters), names_like)
    path = tmp_path / "adapters.safetensors"
    lora.save_adapters(path, boxed, lcfg, base_workdir="runs/quickstart/t2v", base_step=2000)
    loaded = lora.load_adapters(path)
    assert loaded.config == lcfg and (loaded.base_workdir, loaded.base_step) == ("runs/quickstart/t2v", 2000)
    loaded.check_base("runs/quickstart/t2v", 2000)
    with pytest.raises(ValueError, match="runs/other.*retrain"):
        loaded.check_base("runs/other", 2000)
    assert sharding.logical_axes_tree(loaded.params) == sharding.logical_axes_tree(boxed)
    model = den.SpectralDenoiser(cfg)
    inputs, _ = make_inputs(cfg)
    apply = jax.jit(lambda b, a: model.apply({"params": lora.merge(b, a, lcfg)}, *inputs))
    np.testing.assert_array_equal(
        np.asarray(apply(base, sharding.unbox(loaded.params))), np.asarray(apply(base, adapters))
    )
    # With a mesh, the loaded leaves are placed with their kernels' shardings.
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    on_mesh = lora.load_adapters(path, mesh=mesh).params
    assert on_mesh["blocks"]["ffn"]["fc_in"]["kernel"]["b"].value.sharding.spec[-1] == "tensor"
    # Not an adapter file / adapters for another model: errors that say so.
    (tmp_path / "other.safetensors").write_bytes(
        __import__("safetensors.numpy", fromlist=["save"]).save({"x": np.zeros(2, np.float32)})
    )
    with pytest.raises(ValueError, match="not a LoRA adapter file"):
        lora.load_adapters(tmp_path / "other.safetensors")
    small = random_like(abstract_base(denoiser_config("tiny", width=16, heads=2)), 5)
    with pytest.raises(ValueError, match="another model size"):
        lora.merge(small, adapters, lcfg)


def test_config_errors():
    with pytest.raises(ValueError, match="rank"):
        lora.LoraConfig(rank=0)
    _, abstract, _, _, _ = setup(True)
    with pytest.raises(ValueError, match="matched no parameter.*LoraConfig.targets"):
        lora.find_targets(abstract, lora.LoraConfig(rank=2, targets=r"nothing/here"))
