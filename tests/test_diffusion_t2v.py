"""Text-to-video stage end to end at tiny size: token cache (resume, spec check, iterator state), a few t2v
training steps on the generic loop, then `motionaura sample` writes videos of the tokenizer's shape."""

import json
import pathlib

import numpy as np
import pytest

from motionaura_jax import config as config_lib  # noqa: E402
from motionaura_jax.data import token_cache  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> pathlib.Path:
    """An (untrained) vae.py:tiny run: config.json + a checkpoint, without compiling a training step."""
    from motionaura_jax.train import loop
    from motionaura_jax.train.checkpoint import Checkpointer

    workdir = tmp_path_factory.mktemp("vae")
    config = config_lib.load_config("experiments/vae.py:tiny", ["--config.mesh.num_devices=1"])
    setup = loop.build(config)
    state = loop.init_state(setup)
    config_lib.save_config(config, workdir)
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        checkpointer.save(1, state, data_state={}, meta={"config": config.to_dict()}, wait=True)
    return workdir


def _t2v_config(tokenizer_dir, cache, extra=()):
    return config_lib.load_config(
        "experiments/t2v.py:tiny",
        [
            f"--config.tokens.tokenizer_workdir={tokenizer_dir}",
            f"--config.tokens.cache={cache}",
            "--config.data.num_clips=24",
            "--config.tokens.shard_size=10",
            "--config.tokens.batch_size=8",
            "--config.mesh.num_devices=1",
            *extra,
        ],
    )


def test_token_cache_build_resume_and_iterator(tokenizer_dir, tmp_path):
    from motionaura_jax.train.t2v import ensure_token_cache

    config = _t2v_config(tokenizer_dir, tmp_path / "cache")
    cache = ensure_token_cache(config)
    assert len(cache) == 24 and cache.grid == (2, 4, 4) and cache.num_codes == 32
    assert cache.ids.min() >= 0 and cache.ids.max() < 32
    assert cache.text.shape == (len(cache.captions), 16, 384)
    assert cache.caption(0).startswith("a ")
    # An interrupted build resumes: drop the last shard and meta.json, rebuild, get the same arrays back.
    before = cache.ids.copy()
    (tmp_path / "cache" / token_cache.META_FILE).unlink()
    token_cache.shard_path(tmp_path / "cache", 2).unlink()
    np.testing.assert_array_equal(ensure_token_cache(config).ids, before)
    # Different settings refuse to mix into the same folder.
    other = _t2v_config(tokenizer_dir, tmp_path / "cache", ["--config.tokens.text_max_length=8"])
    (tmp_path / "cache" / token_cache.META_FILE).unlink()
    with pytest.raises(token_cache.TokenCacheError, match="text_max_length"):
        ensure_token_cache(other)
    # Iterator: per-process halves make up the global batch; get_state/set_state resumes exactly.
    cache = ensure_token_cache(config)
    whole = token_cache.TokenCacheIterator(cache, global_batch=8, seed=3)
    halves = [
        token_cache.TokenCacheIterator(cache, global_batch=8, seed=3, process_index=p, process_count=2)
        for p in range(2)
    ]
    for _ in range(4):  # crosses an epoch (3 batches per epoch)
        batch = next(whole)
        np.testing.assert_array_equal(np.concatenate([next(h)["index"] for h in halves]), batch["index"])
    state = whole.get_state()
    expected = next(whole)
    fresh = token_cache.TokenCacheIterator(cache, global_batch=8, seed=3)
    fresh.set_state(json.loads(json.dumps(state)))
    got = next(fresh)
    for key in ("ids", "text", "text_mask", "fps", "index"):
        np.testing.assert_array_equal(got[key], expected[key])


def test_train_then_sample(tokenizer_dir, tmp_path, capsys):
    from motionaura_jax.commands import sample
    from motionaura_jax.train import loop

    workdir = tmp_path / "t2v"
    config = _t2v_config(
        tokenizer_dir, tmp_path / "cache", ["--config.train.steps=3", "--config.train.sample_every=3"]
    )
    result = loop.train(config, workdir)
    assert result.step == 3 and np.isfinite(result.last_metrics["loss"])
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "vlb", "aux_ce", "masked_fraction", "grad_norm"} <= set(metrics[0])
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["tokens"]["grid"] == [2, 4, 4] and saved["model"]["vocab_size"] == 32
    assert (workdir / "samples" / "step_0000003" / "sample_000.mp4").is_file()

    out = tmp_path / "out" / "clip.mp4"
    code = sample.main(
        [
            f"--ckpt={workdir}",
            "--prompt",
            "a red circle moving left",
            "--prompt",
            "a blue square moving up",
            f"--out={out}",
            "--steps=4",
            "--guidance=2",
            f"--tokens={tmp_path / 'out' / 'ids.npz'}",
        ]
    )
    assert code == 0
    from motionaura_jax.data.video_io import read_video

    for i in range(2):
        video, _ = read_video(out.with_name(f"clip_{i}.mp4"))
        assert video.shape == (5, 16, 16, 3)
        assert out.with_name(f"clip_{i}.png").is_file()
    with np.load(tmp_path / "out" / "ids.npz") as f:
        ids = f["ids"]
    assert ids.shape == (2, 2, 4, 4) and ids.min() >= 0 and ids.max() < 32  # no [MASK] left
    lines = (tmp_path / "out" / "captions.jsonl").read_text().splitlines()
    assert [json.loads(x)["caption"] for x in lines] == [
        "a red circle moving left",
        "a blue square moving up",
    ]
    # The MaskGIT-order sampler with a temperature ramp, from the CLI.
    args = [f"--ckpt={workdir}", "--prompt", "a red circle moving left", "--num=2", "--steps=5"]
    args += [f"--out={tmp_path / 'conf' / 'clip.mp4'}", "--method=confidence", "--temperature_end=0.3"]
    assert sample.main(args + [f"--tokens={tmp_path / 'conf' / 'ids.npz'}"]) == 0
    with np.load(tmp_path / "conf" / "ids.npz") as f:
        assert f["ids"].shape == (2, 2, 4, 4) and f["ids"].min() >= 0 and f["ids"].max() < 32
    assert (tmp_path / "conf" / "clip_1.mp4").is_file()
    # --warmup: one untimed generation first; the timed one gives the same clips (same seed) and its speed.
    capsys.readouterr()
    args[-3] = f"--out={tmp_path / 'warm' / 'clip.mp4'}"
    assert sample.main(args + ["--warmup", f"--tokens={tmp_path / 'warm' / 'ids.npz'}"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("generated"))
    assert line.startswith("generated 2 clips (confidence, 5 steps) in ") and "compilation" not in line
    assert float(line.split(": ")[1].split(" clips/s")[0]) > 0
    with np.load(tmp_path / "conf" / "ids.npz") as f, np.load(tmp_path / "warm" / "ids.npz") as g:
        np.testing.assert_array_equal(f["ids"], g["ids"])
    assert sample.main([f"--ckpt={tmp_path}", "--prompt", "x", f"--out={out}"]) == 2  # not a workdir
