"""Sketch encoders: SigLIP vision tower parity with transformers' SiglipVisionModel (sharded safetensors, shard by
shard, scanned or not, sharded onto a mesh), the frozen tower + trainable projector, the conv encoder."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # requirements-test.txt installs both: a missing one fails, it does not skip
import transformers

from motionaura_jax.models import sketch
from motionaura_jax.parallel.mesh import make_mesh
from motionaura_jax.parallel.sharding import unbox, use_mesh

HF_CONFIG = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
    hidden_act="gelu_pytorch_tanh",
)


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    """A random SiglipVisionModel saved as several safetensors shards; norms and biases perturbed so a wrong
    mapping shows."""
    folder = tmp_path_factory.mktemp("siglip_tiny")
    torch.manual_seed(0)
    config = transformers.SiglipVisionConfig(**HF_CONFIG)
    config._attn_implementation = "eager"
    model = transformers.SiglipVisionModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias") or "position_embedding" in name:
                p.copy_(0.3 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="20KB")
    pixels = np.random.default_rng(0).uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(
            pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))
        ).last_hidden_state.numpy()
    return folder, pixels, expected


@pytest.mark.parametrize("scan_layers", [False, True])
def test_siglip_parity_with_pytorch(siglip_folder, scan_layers):
    folder, pixels, expected = siglip_folder
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) >= 3 and (folder / "model.safetensors.index.json").is_file(), shards
    tower, variables = sketch.load_siglip_vision(folder, scan_layers=scan_layers, progress=False)
    assert tower.config == sketch.siglip_config_from_hf(HF_CONFIG, scan_layers=scan_layers)
    out = np.asarray(jax.jit(tower.apply)(variables, jnp.asarray(pixels)))
    diff = np.abs(out - expected).max()
    print(f"SigLIP parity (scan={scan_layers}, {len(shards)} shards): max |diff| {diff:.2e} over {out.shape}")
    assert out.shape == (2, 16, 32) and diff <= 1e-4


def test_siglip_sharded_load_and_full_siglip_folder(siglip_folder, tmp_path):
    """Loaded onto an fsdp x tensor mesh leaf by leaf == the plain load, same output under the mesh; a full
    SiglipModel folder (vision_config, "vision_model." names) loads too."""
    folder, pixels, expected = siglip_folder
    _, plain = sketch.load_siglip_vision(folder, progress=False)
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    tower, sharded = sketch.load_siglip_vision(folder, mesh=mesh, progress=False)
    flat_plain = dict(jax.tree.leaves_with_path(plain))
    for path, leaf in jax.tree.leaves_with_path(sharded):
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat_plain[path]))
    fc1 = sharded["params"]["layer_0"]["mlp"]["fc1"]["kernel"]
    assert fc1.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    with use_mesh(mesh):
        out = jax.jit(tower.apply)(sharded, jnp.asarray(pixels))
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-4)

    from safetensors.numpy import load_file, save_file

    tensors = {}
    for file in folder.glob("*.safetensors"):
        tensors.update({f"vision_model.{k}": v for k, v in load_file(file).items()})
    save_file(tensors, tmp_path / "model.safetensors")
    full_config = {"model_type": "siglip", "text_config": {}, "vision_config": HF_CONFIG}
    (tmp_path / "config.json").write_text(json.dumps(full_config))
    tower, variables = sketch.load_siglip_vision(tmp_path, progress=False)
    np.testing.assert_allclose(np.asarray(jax.jit(tower.apply)(variables, pixels)), expected, atol=1e-4)


def _sketches(batch=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    out = np.zeros((batch, size, size, 1), np.uint8)
    for i in range(batch):
        r0, c0 = rng.integers(2, size // 2, size=2)
        out[i, r0 : r0 + 10, c0, 0] = out[i, r0 : r0 + 10, c0 + 9, 0] = 255  # a square outline
        out[i, r0, c0 : c0 + 10, 0] = out[i, r0 + 9, c0 : c0 + 10, 0] = 255
    return out


def test_siglip_sketch_encoder_frozen_tower_trainable_projector(siglip_folder):
    folder, _, _ = siglip_folder
    encoder, variables = sketch.load_siglip_sketch_encoder(
        folder, out_dim=24, rng=jax.random.key(0), progress=False
    )
    sketches = jnp.asarray(_sketches())
    tokens = jax.jit(encoder.apply)(variables, sketches)
    assert tokens.shape == (2, 16, 24)
    pixels = sketch.sketch_to_pixels(sketches, 32)
    assert pixels.shape == (2, 32, 32, 3) and float(pixels.max()) == 1.0 and float(pixels.min()) == -1.0

    def loss(params):
        return jnp.mean(encoder.apply({"params": params}, sketches) ** 2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["tower"]))
    assert float(jnp.abs(grads["projector"]["fc_in"]["kernel"]).max()) > 0
    trainable, frozen = sketch.split_trainable(variables["params"])
    assert set(trainable) == {"projector"} and set(frozen) == {"tower"}


def test_conv_sketch_encoder_tokens_and_gradients():
    encoder = sketch.ConvSketchEncoder(out_dim=24)
    sketches = jnp.asarray(_sketches(batch=3, seed=1))
    params = unbox(jax.jit(encoder.init)(jax.random.key(0), sketches)["params"])
    tokens = jax.jit(encoder.apply)({"params": params}, sketches)
    assert tokens.shape == (3, sketch.num_tokens((32, 32), encoder.channels), 24) == (3, 64, 24)
    # Different sketches give different tokens; uint8 {0,255} and float {0,1} inputs agree.
    assert float(jnp.abs(tokens[0] - tokens[1]).max()) > 1e-3
    as_float = jax.jit(encoder.apply)({"params": params}, sketches.astype(jnp.float32) / 255.0)
    np.testing.assert_allclose(np.asarray(as_float), np.asarray(tokens), atol=1e-5)
    grads = jax.jit(jax.grad(lambda p: jnp.mean(encoder.apply({"params": p}, sketches) ** 2)))(params)
    assert set(grads) == {"conv_0", "conv_1", "conv_2", "norm", "projector"}
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["conv_0"]["kernel"]).max()) > 0
    trainable, frozen = sketch.split_trainable(params)
    assert frozen == {} and set(trainable) == set(params)
    with pytest.raises(ValueError, match=r"\(B, H, W, 1\)"):
        encoder.apply({"params": params}, sketches[..., 0])
