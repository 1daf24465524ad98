"""T5 encoder: parity with PyTorch transformers, HF folder loading (single/sharded), sharded load, configs."""

from __future__ import annotations

import json
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # requirements-test.txt installs torch and transformers: missing is a failure
import transformers

from motionaura_jax.models.text import t5
from motionaura_jax.models.text.loading import (
    CheckpointReader,
    ModelFolderError,
    TensorSource,
    load_params,
    read_block,
)
from motionaura_jax.models.text.tokenize import ByteTokenizer
from motionaura_jax.parallel.mesh import make_mesh
from motionaura_jax.parallel.sharding import logical_axes_tree, use_mesh

SENTENCES = [
    "a red circle moving left",
    "The quick brown fox jumps over the lazy dog, twice.",
    "hi",
    "Ünïcode bytes: naïve café 東京",
]


def _hf_config(**kw):
    fields = dict(
        vocab_size=384,
        d_model=64,
        d_kv=16,
        d_ff=96,
        num_layers=3,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=20,
    )
    fields.update(kw)
    cfg = transformers.T5Config(**fields)
    cfg._attn_implementation = "eager"
    return cfg


def _random_t5(folder: pathlib.Path, seed: int = 0, max_shard_size: str | None = None, **kw):
    """A random T5EncoderModel saved as safetensors; norms and biases perturbed so a wrong mapping shows."""
    torch.manual_seed(seed)
    model = transformers.T5EncoderModel(_hf_config(**kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            if "relative_attention_bias" in name:
                p.copy_(torch.randn_like(p))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return model


def _reference(model, ids_bl, mask_bl):
    with torch.no_grad():
        return model(
            input_ids=torch.from_numpy(ids_bl.astype(np.int64)),
            attention_mask=torch.from_numpy(mask_bl.astype(np.int64)),
        ).last_hidden_state.numpy()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t5_tiny")
    model = _random_t5(folder)
    return folder, model


@pytest.mark.parametrize("scan_layers", [False, True])
def test_parity_with_pytorch_float32(tiny_folder, scan_layers):
    folder, reference = tiny_folder
    ids_bl, mask_bl = ByteTokenizer(40)(SENTENCES)  # padded (short sentences) and truncated (long ones)
    assert mask_bl.sum(1).min() < 40 and mask_bl.sum(1).max() == 40
    expected = _reference(reference, ids_bl, mask_bl)
    model, variables = t5.load_t5_encoder(folder, scan_layers=scan_layers, progress=False)
    out = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(ids_bl), jnp.asarray(mask_bl)))
    diff = np.abs(out - expected).max()
    print(
        f"T5 parity (scan={scan_layers}): max abs diff {diff:.2e} over {out.shape}, |ref|max "
        f"{np.abs(expected).max():.2f}"
    )
    assert diff <= 1e-4


def test_ungated_relu_t5_parity(tmp_path):
    reference = _random_t5(tmp_path, seed=1, feed_forward_proj="relu", num_layers=2)
    ids_bl, mask_bl = ByteTokenizer(24)(SENTENCES[:3])
    model, variables = t5.load_t5_encoder(tmp_path, progress=False)
    assert not model.config.is_gated_act and model.config.dense_act_fn == "relu"
    out = np.asarray(model.apply(variables, ids_bl, mask_bl))
    assert np.abs(out - _reference(reference, ids_bl, mask_bl)).max() <= 1e-4


def test_relative_position_buckets_match_reference():
    from transformers.models.t5.modeling_t5 import T5Attention

    for buckets, max_distance in [(32, 128), (16, 20)]:
        ours = np.asarray(t5.relative_position_buckets(300, 300, buckets, max_distance))
        relative = torch.arange(300)[None, :] - torch.arange(300)[:, None]
        theirs = T5Attention._relative_position_bucket(relative, True, buckets, max_distance).numpy()
        np.testing.assert_array_equal(ours, theirs)


def test_byte_tokenizer_matches_byt5():
    reference = transformers.ByT5Tokenizer()
    ours = ByteTokenizer(24)
    ids_bl, mask_bl = ours(SENTENCES)
    expected = reference(SENTENCES, padding="max_length", truncation=True, max_length=24, return_tensors="np")
    np.testing.assert_array_equal(ids_bl, expected["input_ids"])
    np.testing.assert_array_equal(mask_bl, expected["attention_mask"].astype(bool))


def test_every_param_has_logical_axes():
    for name in ("tiny", "t5-v1_1-xxl"):
        cfg = t5.t5_config(name)
        names = logical_axes_tree(t5.abstract_params(cfg))
        leaves = jax.tree.leaves(names, is_leaf=lambda x: x is None or isinstance(x, tuple))
        assert leaves and all(isinstance(n, tuple) and any(a is not None for a in n) for n in leaves), names
        if cfg.scan_layers:
            assert all(
                n[0] == "layers"
                for n in jax.tree.leaves(names["blocks"], is_leaf=lambda x: isinstance(x, tuple))
            )


def test_xxl_config_matches_hf_structure():
    """Our t5-v1_1-xxl tree maps tensor by tensor onto an HF T5EncoderModel of that config (built on the meta
    device: no memory), with the known 4.76B encoder parameters."""
    cfg = t5.t5_config("t5-v1_1-xxl")
    assert (cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.d_kv, cfg.num_layers, cfg.vocab_size) == (
        4096,
        10240,
        64,
        64,
        24,
        32128,
    )
    hf = _hf_config(
        vocab_size=32128,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
    )
    assert t5.t5_config_from_hf(hf.to_dict(), scan_layers=True, dtype="bfloat16") == cfg
    with torch.device("meta"):
        reference = transformers.T5EncoderModel(hf)
    hf_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    abstract = t5.abstract_params(cfg)
    sources = t5.hf_sources(cfg)
    count = 0
    boxes = jax.tree.leaves_with_path(abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    for (path, leaf), source in zip(boxes, jax.tree.leaves(sources), strict=True):
        assert isinstance(source, TensorSource)
        for hf_name in source.names:
            assert hf_name in hf_shapes, (path, hf_name)
            size = int(np.prod(hf_shapes[hf_name]))
            assert size * len(source.names) == int(np.prod(leaf.value.shape)), (path, hf_name)
        count += int(np.prod(leaf.value.shape))
    hf_count = sum(int(np.prod(s)) for k, s in hf_shapes.items() if k != "encoder.embed_tokens.weight")
    assert count == hf_count == cfg.num_params
    print(f"t5-v1_1-xxl encoder: {count / 1e9:.3f}B parameters")
    assert 4.7e9 < count < 4.8e9


def test_sharded_load_equals_unsharded(tmp_path):
    """Several safetensors shards -> params created sharded on 8 devices (fsdp), equal to the plain load."""
    _random_t5(tmp_path, seed=2, max_shard_size="40KB", num_layers=2)
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) >= 3 and (tmp_path / "model.safetensors.index.json").is_file(), shards
    mesh = make_mesh({"fsdp": 8})
    for scan in (False, True):
        _, plain = t5.load_t5_encoder(tmp_path, scan_layers=scan, progress=False)
        _, sharded = t5.load_t5_encoder(tmp_path, scan_layers=scan, mesh=mesh, progress=False)
        flat_plain = dict(jax.tree.leaves_with_path(plain))
        for path, leaf in jax.tree.leaves_with_path(sharded):
            np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat_plain[path]))
            assert len(leaf.sharding.device_set) == 8
        spec = dict(
            (jax.tree_util.keystr(p), leaf.sharding.spec) for p, leaf in jax.tree.leaves_with_path(sharded)
        )
        key = (
            "['params']['blocks']['attention']['q']['kernel']"
            if scan
            else "['params']['block_0']['attention']['q']['kernel']"
        )
        assert "fsdp" in str(spec[key]), spec
        assert "fsdp" in str(spec["['params']['embed']['embedding']"])
        q = sharded["params"]["blocks" if scan else "block_0"]["attention"]["q"]["kernel"]
        assert q.addressable_shards[0].data.shape[1 if scan else 0] == 64 // 8
        # The sharded params run under the mesh (activation constraints active) and give the same output.
        model, _ = t5.load_t5_encoder(tmp_path, scan_layers=scan, progress=False)
        ids_bl, mask_bl = ByteTokenizer(16)(SENTENCES * 2)
        expected = np.asarray(model.apply(plain, ids_bl, mask_bl))
        with use_mesh(mesh):
            out = jax.jit(model.apply)(sharded, jnp.asarray(ids_bl), jnp.asarray(mask_bl))
        np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


def test_read_block_slices_match_full_read(tmp_path):
    """Blocks of split/transposed/stacked leaves equal slices of the full leaf."""
    _random_t5(tmp_path, seed=3, num_layers=2)
    cfg = t5.t5_config_from_hf(json.loads((tmp_path / "config.json").read_text()), scan_layers=True)
    reader = CheckpointReader(tmp_path)
    sources = t5.hf_sources(cfg, reader)
    o_source = sources["blocks"]["attention"]["o"]["kernel"]
    shape = (2, 4, 16, 64)
    full = read_block(reader, o_source, shape)
    index = (slice(1, 2), slice(1, 3), slice(4, 12), slice(8, 40))
    np.testing.assert_array_equal(read_block(reader, o_source, shape, index), full[index])


SHARDED_MEMORY_SCRIPT = r"""
import json, sys, tracemalloc
import jax, numpy as np
from motionaura_jax.models.text import t5
from motionaura_jax.models.text.loading import CheckpointReader, load_params, read_config_json, shardings_for
from motionaura_jax.parallel.mesh import make_mesh

folder, mode = sys.argv[1], sys.argv[2]
mesh = make_mesh({"fsdp": 8})
cfg = t5.t5_config_from_hf(read_config_json(folder))
abstract = t5.abstract_params(cfg)
jax.block_until_ready(jax.device_put(np.ones(8), jax.devices()[1]))

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

open("/proc/self/clear_refs", "w").write("5")  # resets the peak RSS (VmHWM)
base = status("VmRSS:")
tracemalloc.start()
if mode == "ours":
    reader = CheckpointReader(folder)
    params = load_params(reader, abstract, t5.hf_sources(cfg, reader), mesh=mesh, progress=False)
else:  # the naive way: every tensor on the host, then device_put with the same shardings
    from safetensors.numpy import load_file
    import glob
    full = {}
    for file in sorted(glob.glob(folder + "/*.safetensors")):
        full.update(load_file(file))
    reader = CheckpointReader(folder)
    shardings = shardings_for(abstract, mesh)
    from motionaura_jax.models.text.loading import TensorSource
    sources = t5.hf_sources(cfg, reader)
    params = jax.tree.map(
        lambda src, a, s: jax.device_put(
            (full[src.names[0]].T if src.transpose else full[src.names[0]]).reshape(a.value.shape), s),
        sources, abstract, shardings, is_leaf=lambda x: isinstance(x, TensorSource))
jax.block_until_ready(params)
_, traced_peak = tracemalloc.get_traced_memory()
peak_growth = status("VmHWM:") - base
device_bytes = sum(s.data.nbytes for leaf in jax.tree.leaves(params) for s in leaf.addressable_shards)
print(json.dumps({"model_bytes": cfg.num_params * 4, "rss_peak_growth": peak_growth,
                  "device_bytes": device_bytes, "traced_peak": traced_peak}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
def test_sharded_load_host_memory_below_model_size(tmp_path, subprocess_runner):
    """~100 MB model in 4+ shards, loaded onto 8 devices in a fresh process; peak RSS around the load.

    On CPU the 'devices' live in host memory, so the loaded arrays themselves (device_bytes) are part of the
    RSS; what the loader adds on top of them (the transient host memory) must stay well below the model size,
    while the naive whole-checkpoint load needs at least one extra model's worth.
    """
    _random_t5(
        tmp_path,
        seed=4,
        max_shard_size="20MB",
        vocab_size=8192,
        d_model=512,
        d_kv=64,
        num_heads=8,
        d_ff=1536,
        num_layers=6,
    )
    assert len(list(tmp_path.glob("*.safetensors"))) >= 4
    results = {}
    for mode in ("ours", "naive"):
        proc = subprocess_runner(["-c", SHARDED_MEMORY_SCRIPT, str(tmp_path), mode], devices=8, timeout=240)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    model_mb = results["ours"]["model_bytes"] / 1e6
    for mode, r in results.items():
        transient = (r["rss_peak_growth"] - r["device_bytes"]) / 1e6
        print(
            f"{mode}: model {model_mb:.1f} MB; peak RSS growth during load "
            f"{r['rss_peak_growth'] / 1e6:.1f} MB, "
            f"of which loaded device arrays {r['device_bytes'] / 1e6:.1f} MB -> transient host memory "
            f"{transient:.1f} MB ({transient / model_mb:.2f}x model); "
            f"tracemalloc peak {r['traced_peak'] / 1e6:.1f} MB"
        )
    ours, naive = results["ours"], results["naive"]
    assert ours["device_bytes"] >= 0.99 * ours["model_bytes"]
    assert ours["rss_peak_growth"] - ours["device_bytes"] < 0.5 * ours["model_bytes"]
    assert ours["traced_peak"] < 0.5 * ours["model_bytes"]
    # The measurement can tell: the naive load holds a full extra copy.
    assert naive["rss_peak_growth"] - naive["device_bytes"] > 0.9 * naive["model_bytes"]


def test_missing_or_incomplete_folder_errors(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        t5.load_t5_encoder(tmp_path / "nope")
    with pytest.raises(ModelFolderError, match="config.json"):
        t5.load_t5_encoder(tmp_path)
    _random_t5(tmp_path, seed=5, max_shard_size="40KB", num_layers=2)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[1]
    shard.rename(tmp_path / "moved.bin")
    with pytest.raises(ModelFolderError, match=shard.name):
        t5.load_t5_encoder(tmp_path, progress=False)
    (tmp_path / "moved.bin").rename(shard)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    del index["weight_map"]["encoder.final_layer_norm.weight"]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFolderError, match="encoder.final_layer_norm.weight"):
        t5.load_t5_encoder(tmp_path, progress=False)
    for file in tmp_path.glob("model*"):
        file.unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelFolderError, match="model.safetensors.*PyTorch .bin"):
        t5.load_t5_encoder(tmp_path, progress=False)


def test_config_weight_mismatch_is_named(tmp_path):
    _random_t5(tmp_path, seed=6, num_layers=2)
    config = json.loads((tmp_path / "config.json").read_text())
    config["d_ff"] = 128
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="wi_0.weight.*config"):
        t5.load_t5_encoder(tmp_path, progress=False)


def test_load_params_rejects_unmapped_leaf(tmp_path):
    _random_t5(tmp_path, seed=7, num_layers=1)
    cfg = t5.t5_config_from_hf(json.loads((tmp_path / "config.json").read_text()))
    sources = t5.hf_sources(cfg)
    del sources["final_norm"]
    with pytest.raises(KeyError, match="final_norm"):
        load_params(CheckpointReader(tmp_path), t5.abstract_params(cfg), sources, progress=False)
