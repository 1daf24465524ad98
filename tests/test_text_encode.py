"""encode_text API, on-disk cache, embed-text command, and running without PyTorch."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch  # requirements-test.txt installs torch and transformers: missing is a failure
import transformers

from motionaura_jax.models.text import encode
from motionaura_jax.models.text.loading import ModelFolderError

PROMPTS = [
    "a red circle moving left",
    "a blue square moving up",
    "stock prices fell",
    "a red circle moving left",
]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    """A tiny random T5 encoder saved by PyTorch transformers (no tokenizer files: bytes are used)."""
    folder = tmp_path_factory.mktemp("t5_enc")
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=384,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )
    transformers.T5EncoderModel(cfg).save_pretrained(folder)
    return folder


def test_minilm_encode_and_cache(tmp_path, monkeypatch):
    emb_bld, mask_bl = encode.encode_text(PROMPTS, max_length=16, cache_dir=tmp_path)
    assert emb_bld.shape == (4, 16, 384) and emb_bld.dtype == np.float32 and mask_bl.shape == (4, 16)
    assert mask_bl[0].sum() == 7  # [CLS] a red circle moving left [SEP]
    np.testing.assert_array_equal(emb_bld[0], emb_bld[3])
    assert len(list(tmp_path.rglob("*.npz"))) == 3  # one file per distinct prompt

    # A second call is served from disk: the encoder is never loaded.
    def no_load(*args, **kwargs):
        raise AssertionError("cache miss: the encoder was loaded")

    monkeypatch.setattr(encode, "load_text_encoder", no_load)
    cached, cached_mask = encode.encode_text(PROMPTS[::-1], max_length=16, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached, emb_bld[::-1])
    np.testing.assert_array_equal(cached_mask, mask_bl[::-1])
    # The max length is part of the key: another length misses (and here would have to load).
    with pytest.raises(AssertionError, match="cache miss"):
        encode.encode_text(PROMPTS[:1], max_length=12, cache_dir=tmp_path)


def test_batches_padded_to_one_shape_equal_single(t5_folder):
    enc = encode.load_text_encoder("t5", t5_folder, max_length=24, tokenizer="bytes", progress=False)
    batched, mask = enc.encode(PROMPTS + ["x"], batch_size=2)  # 5 prompts: the last batch is padded
    for i, prompt in enumerate(PROMPTS + ["x"]):
        single, single_mask = enc.encode([prompt])
        np.testing.assert_allclose(batched[i], single[0], atol=1e-5)
        np.testing.assert_array_equal(mask[i], single_mask[0])


def test_identity_follows_the_weights(t5_folder, tmp_path):
    other = tmp_path / "other"
    torch.manual_seed(1)
    cfg = transformers.T5Config.from_pretrained(t5_folder)
    transformers.T5EncoderModel(cfg).save_pretrained(other)
    ids = {encode.encoder_identity("t5", f, tokenizer="bytes") for f in (t5_folder, other)}
    assert len(ids) == 2
    assert encode.encoder_identity("t5", t5_folder, tokenizer="bytes") != encode.encoder_identity(
        "t5", t5_folder, tokenizer="bytes", dtype="bfloat16"
    )
    keys = {encode.cache_key(i, 16, "p") for i in ids} | {encode.cache_key(next(iter(ids)), 17, "p")}
    assert len(keys) == 3


def test_t5_without_tokenizer_files_says_how(t5_folder):
    with pytest.raises(ModelFolderError, match="no tokenizer file.*--tokenizer=bytes"):
        encode.encode_text(["a"], encoder="t5", model_dir=t5_folder)
    with pytest.raises(ModelFolderError, match="needs a model folder"):
        encode.encode_text(["a"], encoder="t5")


def test_embed_text_command(t5_folder, tmp_path, capsys):
    from motionaura_jax.commands import embed_text

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a red circle moving left\n\na green triangle moving down\n", encoding="utf-8")
    out = tmp_path / "out" / "emb.npz"
    args = [
        "--encoder=t5",
        f"--model-dir={t5_folder}",
        f"--prompts={prompts_file}",
        f"--out={out}",
        "--tokenizer=bytes",
        "--max-length=32",
        f"--cache-dir={tmp_path / 'cache'}",
    ]
    assert embed_text.main(args) == 0
    with np.load(out) as data:
        assert data["embeddings"].shape == (2, 32, 32) and data["mask"].shape == (2, 32)
        assert list(data["prompts"]) == ["a red circle moving left", "a green triangle moving down"]
        expected, _ = encode.encode_text(
            list(data["prompts"]), encoder="t5", model_dir=t5_folder, tokenizer="bytes", max_length=32
        )
        np.testing.assert_allclose(data["embeddings"], expected, atol=1e-6)
    # A missing model folder file is named.
    (tmp_path / "broken").mkdir()
    assert (
        embed_text.main(
            [
                "--encoder=t5",
                f"--model-dir={tmp_path / 'broken'}",
                f"--prompts={prompts_file}",
                f"--out={out}",
            ]
        )
        == 2
    )
    assert "config.json" in capsys.readouterr().err
    assert embed_text.main([f"--prompts={tmp_path / 'none.txt'}", f"--out={out}"]) == 2


NO_TORCH_SCRIPT = r"""
import importlib.abc, json, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, BlockTorch())
try:
    import torch  # noqa: F401
    raise SystemExit("torch was importable")
except ModuleNotFoundError:
    pass
import motionaura_jax.models.text
from motionaura_jax.models.text.encode import encode_text
minilm, minilm_mask = encode_text(["a dog runs on the beach"], max_length=16)
t5, t5_mask = encode_text(["a red circle moving left"], encoder="t5", model_dir=sys.argv[1],
                          tokenizer="bytes", max_length=32)
assert "torch" not in sys.modules
print(json.dumps({"minilm": minilm[0, :3, :4].tolist(), "t5": t5[0, :3, :4].tolist(),
                  "masks": [int(minilm_mask.sum()), int(t5_mask.sum())]}))
"""


def test_runs_without_torch(t5_folder, subprocess_runner):
    proc = subprocess_runner(["-c", NO_TORCH_SCRIPT, str(t5_folder)], devices=1, timeout=180)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    minilm, _ = encode.encode_text(["a dog runs on the beach"], max_length=16)
    t5, _ = encode.encode_text(
        ["a red circle moving left"], encoder="t5", model_dir=t5_folder, tokenizer="bytes", max_length=32
    )
    np.testing.assert_allclose(result["minilm"], minilm[0, :3, :4], atol=1e-5)
    np.testing.assert_allclose(result["t5"], t5[0, :3, :4], atol=1e-5)
    assert result["masks"] == [8, 25]
    assert pathlib.Path(t5_folder, "config.json").is_file()
