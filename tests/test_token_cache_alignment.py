"""The token cache is aligned clip by clip: row i holds the tokenizer's ids of source clip i, the caption of
source clip i and the text encoder's embedding of that caption. Shape and range checks alone would pass a
cache whose ids, captions or embeddings were shifted by one clip."""

import pathlib

import numpy as np
import pytest

from motionaura_jax import config as config_lib

NUM_CLIPS = 20  # two shards of 16 and 4: the last batch of a shard is padded, and shard 2 starts at clip 16


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> pathlib.Path:
    """An untrained vae.py:tiny run (random weights still map different clips to different ids)."""
    from motionaura_jax.train import loop
    from motionaura_jax.train.checkpoint import Checkpointer

    workdir = tmp_path_factory.mktemp("vae")
    config = config_lib.load_config("experiments/vae.py:tiny", ["--config.mesh.num_devices=1"])
    state = loop.init_state(loop.build(config))
    config_lib.save_config(config, workdir)
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        checkpointer.save(1, state, data_state={}, meta={"config": config.to_dict()}, wait=True)
    return workdir


def test_cache_rows_are_the_encodings_of_their_own_clips(tokenizer_dir, tmp_path):
    from motionaura_jax.data.pipeline import make_source, to_model_range
    from motionaura_jax.pipelines.t2v import prompt_encoder
    from motionaura_jax.pipelines.tokenizer import Tokenizer
    from motionaura_jax.train.t2v import ensure_token_cache

    config = config_lib.load_config(
        "experiments/t2v.py:tiny",
        [
            f"--config.tokens.tokenizer_workdir={tokenizer_dir}",
            f"--config.tokens.cache={tmp_path / 'cache'}",
            f"--config.data.num_clips={NUM_CLIPS}",
            "--config.tokens.shard_size=16",
            "--config.tokens.batch_size=6",
            "--config.mesh.num_devices=1",
        ],
    )
    cache = ensure_token_cache(config)
    assert len(cache) == NUM_CLIPS
    np.testing.assert_array_equal(cache.index, np.arange(NUM_CLIPS))

    source = make_source(config.data, split=config.tokens.split, seed=0)
    clips = [source.load(i, i) for i in range(NUM_CLIPS)]
    tokenizer = Tokenizer.load(tokenizer_dir)
    expected_ids = np.concatenate(
        [tokenizer.encode(to_model_range(clip["video"])[None]) for clip in clips]  # one clip at a time
    )
    # The check below can only see a shift if neighbouring clips have different ids and captions.
    assert all(not np.array_equal(expected_ids[i], expected_ids[i + 1]) for i in range(NUM_CLIPS - 1))
    captions = [str(clip["caption"]) for clip in clips]
    assert len(set(captions)) > NUM_CLIPS // 2

    for i in range(NUM_CLIPS):
        np.testing.assert_array_equal(cache.ids[i], expected_ids[i], err_msg=f"ids of clip {i}")
        assert cache.caption(i) == captions[i], f"caption of clip {i}"
        assert cache.fps[i] == np.float32(clips[i]["fps"])

    encode_text = prompt_encoder(config, int(config.tokens.text_max_length) or None)
    for i in range(NUM_CLIPS):
        text, mask = encode_text([captions[i]])  # that caption alone, as a prompt would be encoded
        batch = cache.batch(np.array([i]))
        np.testing.assert_array_equal(batch["text_mask"][0], mask[0], err_msg=f"text mask of clip {i}")
        np.testing.assert_allclose(batch["text"][0], text[0], atol=1e-4, err_msg=f"text of clip {i}")
        np.testing.assert_array_equal(batch["ids"][0], expected_ids[i])
