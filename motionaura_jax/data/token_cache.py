"""Text-to-video data: clips as code ids of the frozen tokenizer, captions as frozen text embeddings.

    build_token_cache("runs/cache", encode_video=tokenizer.encode, encode_text=encode, num_codes=K,
                      identity={"tokenizer_workdir": ...}, data_cfg=config.data)
    cache = TokenCache("runs/cache"); it = TokenCacheIterator(cache, global_batch=8, seed=0)

The data layer knows no model: the stage that needs a cache (train/t2v.py) hands in the frozen encoders.

Layout of a cache folder:
  spec.json           what it was built from (tokenizer run and step, data config, split, text encoder); a
                      rebuild with a different spec refuses to mix the two
  shard_00000.npz     `shard_size` clips: ids int32 (n, T', H', W'), fps float32 (n,), index int32 (n,)
                      (the clip's index in its source), caption_index int32 (n,) into the shard's own table
                      captions (U,) str, text float32 (U, L, D), text_mask bool (U, L)
  meta.json           written last: num_clips, grid, num_codes, text_len, text_dim, num_shards
Every file is written to a temporary name and renamed, so an interrupted build resumes at the first missing
shard. Captions are stored once per shard (Moving Shapes has 84 distinct captions), not once per clip.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from etils import epath

from motionaura_jax import atomic, paths

SPEC_FILE, META_FILE = "spec.json", "meta.json"
VERSION = 1


class TokenCacheError(ValueError):
    """A cache that cannot be built or read as asked; the message names the folder and the fix."""


def _write_json(path: epath.Path, value: dict) -> None:
    atomic.write_text(path, json.dumps(value, indent=1, sort_keys=True))


def shard_path(folder: epath.Path, shard: int) -> epath.Path:
    return folder / f"shard_{shard:05d}.npz"


def is_complete(folder: str | os.PathLike) -> bool:
    return (paths.as_path(folder) / META_FILE).exists()


@contextlib.contextmanager
def _open_npz(path: epath.Path) -> Iterator[Any]:
    """np.load of a local or remote (gs://...) .npz; no pickles."""
    with path.open("rb") as raw, np.load(raw, allow_pickle=False) as data:
        yield data


VideoEncoder = Callable[[np.ndarray], np.ndarray]
TextEncoder = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]
# (the batch's clip dicts, their padded video (batch_size, T, H, W, 3) in [-1, 1]) -> {name: (batch_size, ...)}
ExtraFields = Callable[[list[dict[str, Any]], np.ndarray], dict[str, np.ndarray]]
EXTRA_PREFIX = "extra_"


def build_token_cache(
    out_dir: str | os.PathLike,
    *,
    encode_video: VideoEncoder,
    encode_text: TextEncoder,
    num_codes: int,
    identity: dict[str, Any],
    data_cfg,
    split: str = "train",
    num_clips: int = 0,
    shard_size: int = 256,
    batch_size: int = 16,
    progress: bool = True,
    extra_fields: ExtraFields | None = None,
) -> epath.Path:
    """Encodes `split` of the data (the first `num_clips`, 0: all) with the given frozen encoders.

    encode_video: float32 clips (batch_size, T, H, W, 3) in [-1, 1] -> int code ids (batch_size, T', H', W').
    encode_text: captions -> (embeddings (n, L, D), mask (n, L)).
    num_codes: the tokenizer's vocabulary K; identity: what the encoders are (tokenizer run and step, text
    encoder and its settings), recorded in spec.json so that a rebuild with other encoders refuses to mix.
    extra_fields: more per-clip arrays to store (e.g. inpainting's masked-video ids and sketches), computed
    from each batch's clips and padded video; stored as `extra_<name>`, returned by `TokenCache.batch` as
    `<name>` (describe them in `identity`). Resumable: shards already on disk are kept. Returns the folder.
    """
    from motionaura_jax.data.pipeline import make_source, to_model_range

    out = paths.as_path(out_dir)
    source = make_source(data_cfg, split=split, seed=0)
    total = len(source) if not num_clips else min(int(num_clips), len(source))
    if total <= 0:
        raise TokenCacheError(f"token cache {out}: split {split!r} of the data has no clips")
    if shard_size < 1 or batch_size < 1:
        raise TokenCacheError(f"token cache {out}: shard_size and batch_size must be >= 1")
    spec = {
        "version": VERSION,
        **identity,
        "num_codes": int(num_codes),
        "data": {
            k: v
            for k, v in sorted(dict(data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else data_cfg).items())
            if isinstance(v, (int, float, str, bool))
        },
        "split": split,
        "num_clips": total,
        "shard_size": int(shard_size),
    }
    spec_file = out / SPEC_FILE
    if spec_file.exists():
        old = json.loads(spec_file.read_text())
        changed = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
        if changed:
            raise TokenCacheError(
                f"token cache {out} was built with other settings ({', '.join(changed)} differ: "
                f"{ {k: old.get(k) for k in changed} } vs { {k: spec.get(k) for k in changed} }); "
                "delete the folder or choose another path"
            )
    else:
        paths.mkdir(out)
        _write_json(spec_file, spec)

    num_shards = -(-total // shard_size)
    grid = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"tokenize {split}", unit="clip")
    for shard in range(num_shards):
        start, stop = shard * shard_size, min(total, (shard + 1) * shard_size)
        path = shard_path(out, shard)
        if path.exists():
            if grid is None:
                with _open_npz(path) as f:
                    grid = tuple(int(g) for g in f["ids"].shape[1:])
            if bar is not None:
                bar.update(stop - start)
            continue
        ids, fps, captions = [], [], []
        extras: dict[str, list[np.ndarray]] = {}
        for first in range(start, stop, batch_size):
            last = min(stop, first + batch_size)
            clips = [source.load(i, i) for i in range(first, last)]
            video = np.stack([to_model_range(c["video"]) for c in clips])
            if len(clips) < batch_size:  # pad to one shape: one compile for the whole build
                video = np.concatenate([video, np.repeat(video[-1:], batch_size - len(clips), axis=0)])
            ids.append(np.asarray(encode_video(video))[: len(clips)])
            if extra_fields is not None:
                for name, value in extra_fields(clips, video).items():
                    extras.setdefault(name, []).append(np.asarray(value)[: len(clips)])
            fps.extend(float(c["fps"]) for c in clips)
            captions.extend(str(c["caption"]) for c in clips)
            if bar is not None:
                bar.update(len(clips))
        table = sorted(set(captions))
        text, text_mask = encode_text(table)
        position = {c: i for i, c in enumerate(table)}
        ids_n = np.concatenate(ids)
        grid = tuple(int(g) for g in ids_n.shape[1:])
        atomic.write_npz(
            path,
            ids=ids_n.astype(np.int32),
            fps=np.asarray(fps, np.float32),
            index=np.arange(start, stop, dtype=np.int32),
            caption_index=np.asarray([position[c] for c in captions], np.int32),
            captions=np.asarray(table),
            text=np.asarray(text, np.float32),
            text_mask=np.asarray(text_mask, bool),
            **{EXTRA_PREFIX + name: np.concatenate(parts) for name, parts in extras.items()},
        )
    if bar is not None:
        bar.close()
    with _open_npz(shard_path(out, 0)) as f:
        text_len, text_dim = (int(d) for d in f["text"].shape[1:])
    _write_json(
        out / META_FILE,
        {
            "num_clips": total,
            "num_shards": num_shards,
            "grid": list(grid),
            "num_codes": spec["num_codes"],
            "text_len": text_len,
            "text_dim": text_dim,
            "split": split,
        },
    )
    return out


class TokenCache:
    """A finished cache, loaded into host memory (ids are small: 5·8·8 int32 per 17-frame 32² clip)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = paths.as_path(folder)
        if not is_complete(self.folder):
            raise TokenCacheError(
                f"{self.folder} is not a finished token cache (no {META_FILE}); build it with "
                "motionaura train on a t2v config, which builds it (resumes where it stopped)"
            )
        self.meta = json.loads((self.folder / META_FILE).read_text())
        ids, fps, index, caption_index, captions, texts, masks = [], [], [], [], [], [], []
        extras: dict[str, list[np.ndarray]] = {}
        for shard in range(int(self.meta["num_shards"])):
            with _open_npz(shard_path(self.folder, shard)) as f:
                ids.append(f["ids"])
                fps.append(f["fps"])
                index.append(f["index"])
                caption_index.append(f["caption_index"] + len(captions))
                captions.extend(str(c) for c in f["captions"])
                texts.append(f["text"])
                masks.append(f["text_mask"])
                for key in f.files:
                    if key.startswith(EXTRA_PREFIX):
                        extras.setdefault(key[len(EXTRA_PREFIX) :], []).append(f[key])
        self.ids = np.concatenate(ids)
        self.fps = np.concatenate(fps)
        self.index = np.concatenate(index)
        self.caption_index = np.concatenate(caption_index)
        self.captions = captions
        self.text = np.concatenate(texts)
        self.text_mask = np.concatenate(masks)
        self.extras = {name: np.concatenate(parts) for name, parts in extras.items()}

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(int(g) for g in self.meta["grid"])

    @property
    def num_codes(self) -> int:
        return int(self.meta["num_codes"])

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = self.caption_index[indices]
        return {
            "ids": self.ids[indices].astype(np.int32),
            "text": self.text[rows],
            "text_mask": self.text_mask[rows],
            "fps": self.fps[indices].astype(np.float32),
            "index": self.index[indices].astype(np.int32),
            **{name: value[indices] for name, value in self.extras.items()},
        }

    def caption(self, i: int) -> str:
        return self.captions[int(self.caption_index[i])]


class TokenCacheIterator:
    """Host-local batches from a TokenCache. Each epoch is a seeded permutation; global batch j is
    permutation[j·B:(j+1)·B] and process p takes its contiguous slice, so the state is a batch counter."""

    def __init__(
        self,
        cache: TokenCache,
        *,
        global_batch: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if global_batch % process_count:
            raise TokenCacheError(
                f"global batch {global_batch} is not divisible by {process_count} processes"
            )
        if len(cache) < global_batch:
            raise TokenCacheError(
                f"token cache {cache.folder} holds {len(cache)} clips, fewer than one batch of "
                f"{global_batch}; build it with more clips or lower train.batch_size"
            )
        self.cache, self.global_batch, self.seed = cache, global_batch, seed
        self.local_batch = global_batch // process_count
        self.offset = process_index * self.local_batch
        self.batch_index = 0

    def _indices(self, batch_index: int) -> np.ndarray:
        per_epoch = len(self.cache) // self.global_batch
        epoch, within = divmod(batch_index, per_epoch)
        permutation = np.random.default_rng([self.seed, epoch]).permutation(len(self.cache))
        start = within * self.global_batch + self.offset
        return permutation[start : start + self.local_batch]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.cache.batch(self._indices(self.batch_index))
        self.batch_index += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"batch_index": self.batch_index}

    def set_state(self, state: dict[str, Any]) -> None:
        self.batch_index = int(state["batch_index"])

    def __len__(self) -> int:
        return len(self.cache)
