"""Host-local batches from any video source through grain, sharded per process and exactly resumable.

Every stage selects its data the same way: `data.source` in {"synthetic", "folder", "tfds"}, `data.path`,
`data.frames`, `data.size`, `data.fps` (+ source extras; every key and its default: configs/data.py). The
stream is

  range(N) -> seeded shuffle (reshuffled each epoch) -> repeat -> tag with the global stream position
  -> process p keeps positions p, p+P, p+2P, ...   (disjoint shards that together cover every epoch)
  -> decode + augment in background threads -> per-host batch (-> optional worker processes)

so process p's i-th element is the global position i*P + p: the P processes read each epoch once between
them. Random augmentation is seeded by (seed, video, position), so a resumed iterator repeats nothing and
skips nothing: `get_state()` after k batches + `set_state()` on a fresh iterator yields exactly batch k+1.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import ml_collections
import numpy as np

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "folder", "tfds")


def to_model_range(video_u8: np.ndarray) -> np.ndarray:
    """uint8 [0,255] -> float32 [-1,1]."""
    return video_u8.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)


class _Source:
    """Random access to clips: `load(index, key)` -> dict of numpy arrays (video uint8) plus `caption`."""

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int, key: int) -> dict[str, Any]:
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        return {}


class _SyntheticSource(_Source):
    def __init__(self, data_cfg, split: str):
        from motionaura_jax.data.synthetic import MovingShapes

        self.shapes = MovingShapes.from_data_config(data_cfg, split)
        self.with_masks = bool(data_cfg.with_masks)

    def __len__(self):
        return len(self.shapes)

    def load(self, index, key):
        clip = self.shapes[index]
        out = {"video": clip["video"], "caption": clip["caption"], "fps": clip["fps"]}
        if self.with_masks:
            out["masks"], out["sketch"] = clip["masks"], clip["sketch"]
        return out


class _FolderSource(_Source):
    def __init__(self, data_cfg, split: str, seed: int):
        from motionaura_jax.data.video_folder import VideoFolder

        if not data_cfg.path:
            raise ValueError(
                "data.source='folder' needs data.path (a folder of videos): "
                "--config.data.path=/path/to/videos"
            )
        train = split == "train"
        self.folder = VideoFolder(
            data_cfg.path,
            frames=int(data_cfg.frames),
            size=int(data_cfg.size),
            fps=float(data_cfg.fps) or None,
            random_crop=train and bool(data_cfg.random_crop),
            flip=train and bool(data_cfg.flip),
            seed=seed,
            with_masks=bool(data_cfg.with_masks),
        )

    def __len__(self):
        return len(self.folder)

    def load(self, index, key):
        clip = self.folder.get(index, key)
        out = {"video": clip["video"], "caption": clip["caption"], "fps": clip["fps"]}
        if self.folder.with_masks:
            out["masks"], out["sketch"] = clip["masks"], clip["sketch"]
        return out

    def metrics(self):
        return self.folder.metrics()


class _TfdsSource(_Source):
    def __init__(self, data_cfg, split: str, seed: int):
        from motionaura_jax.data import tfds_builder

        if not data_cfg.path:
            raise ValueError(
                "data.source='tfds' needs data.path (a folder written by `motionaura data build`)"
            )
        self.records = tfds_builder.open_split(data_cfg.path, split)
        self.frames, self.size = int(data_cfg.frames), int(data_cfg.size)
        self.train = split == "train"
        self.random_crop = self.train and bool(data_cfg.random_crop)
        self.flip = self.train and bool(data_cfg.flip)
        self.with_masks = bool(data_cfg.with_masks)
        self.seed = seed

    def __len__(self):
        return len(self.records)

    def load(self, index, key):
        from motionaura_jax.data import tfds_builder
        from motionaura_jax.data.video_folder import clip_frame_indices, resize_and_crop

        record = tfds_builder.decode_record(self.records[index])
        video = record["video"]
        rng = np.random.default_rng([self.seed, index, key]) if self.random_crop or self.flip else None
        masks, sketch = record.get("masks"), record.get("sketch")
        if video.shape[0] != self.frames:
            if video.shape[0] < self.frames:
                raise ValueError(
                    f"TFDS clips have {video.shape[0]} frames, fewer than data.frames={self.frames}"
                )
            idx = clip_frame_indices(
                video.shape[0], 1.0, self.frames, None, rng if self.random_crop else None
            )
            video = video[idx]
            masks = masks[idx] if masks is not None else None
        if video.shape[1:3] != (self.size, self.size):
            # Masks and sketches only make sense at the stored size.
            video, masks, sketch = (
                resize_and_crop(video, self.size, rng=rng if self.random_crop else None),
                None,
                None,
            )
        if self.flip and rng.random() < 0.5:
            video = video[:, :, ::-1]
            masks = masks[:, :, ::-1] if masks is not None else None
            sketch = sketch[:, ::-1] if sketch is not None else None
        out = {"video": np.ascontiguousarray(video), "caption": record["caption"], "fps": record["fps"]}
        if self.with_masks and masks is not None:
            out["masks"], out["sketch"] = np.ascontiguousarray(masks), np.ascontiguousarray(sketch)
        return out


def make_source(data_cfg, *, split: str, seed: int = 0) -> _Source:
    source = data_cfg.source
    if source == "synthetic":
        return _SyntheticSource(data_cfg, split)
    if source == "folder":
        return _FolderSource(data_cfg, split, seed)
    if source == "tfds":
        return _TfdsSource(data_cfg, split, seed)
    raise ValueError(f"data.source={source!r} unknown; use one of {SOURCES}")


def _tag_with_position(position: int, index: int) -> tuple[int, int]:
    return position, index


class _LoadClip:
    """(position, index) -> model-ready element. A class (not a lambda) so grain workers can pickle it."""

    def __init__(self, source: _Source):
        self.source = source

    def __call__(self, tagged: tuple[int, int]) -> dict[str, Any]:
        position, index = tagged
        clip = self.source.load(int(index), int(position))
        element = {
            "video": to_model_range(clip["video"]),
            "fps": np.float32(clip["fps"]),
            "caption": np.asarray(clip["caption"]),
            "index": np.int32(index),  # int32: jax without x64 would truncate int64 anyway
        }
        for name in ("masks", "sketch"):
            if name in clip:
                element[name] = clip[name]
        return element


class HostIterator:
    """This process's batches: dict of numpy arrays with leading dim = per-host batch.

    `get_state()` is JSON-able and describes the position *after* the batches already returned, background
    prefetch included; `set_state()` on any iterator of the same config makes its next batch the one that
    would have come next. `metrics()` reports data problems (e.g. unreadable files skipped).
    """

    def __init__(self, dataset, source: _Source, description: str):
        self._dataset, self._source, self.description = dataset, source, description
        self._iterator = iter(dataset)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def get_state(self) -> dict:
        state = self._iterator.get_state()
        return json.loads(json.dumps(state, default=_jsonable))

    def set_state(self, state: dict) -> None:
        self._iterator.set_state(state)

    def metrics(self) -> dict[str, float]:
        return self._source.metrics()

    def __len__(self) -> int:
        """Clips per epoch over all processes."""
        return len(self._source)

    def __repr__(self) -> str:
        return f"HostIterator({self.description})"


def _jsonable(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError(f"iterator state holds a {type(value)} that is not JSON-serialisable")


def make_host_iterator(
    data_cfg: ml_collections.ConfigDict,
    *,
    batch_size: int,
    split: str,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool | None = None,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
) -> HostIterator:
    """This process's iterator over `split` (see the module doc for the order of the stream).

    batch_size is per host. shuffle defaults to True for "train" and False otherwise; num_epochs=None
    repeats forever (training), an int stops after that many passes; its last partial batch is dropped
    unless drop_remainder=False (evaluation: every clip counts, at the cost of one more compile).
    """
    import grain

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must be in [0, process_count={process_count})")
    source = make_source(data_cfg, split=split, seed=seed)
    n = len(source)
    if n == 0:
        raise ValueError(f"data split {split!r} of source {data_cfg.source!r} is empty")
    shuffle = (split == "train") if shuffle is None else shuffle
    ds = grain.MapDataset.range(n)
    if shuffle:
        ds = ds.shuffle(seed=int(seed) % 2**32)  # grain reseeds each epoch: every epoch is a new order
    ds = ds.repeat(num_epochs)
    ds = ds.map_with_index(_tag_with_position)
    ds = ds[process_index::process_count]
    ds = ds.map(_LoadClip(source))
    threads, prefetch = int(data_cfg.read_threads), int(data_cfg.prefetch)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(prefetch, 1)))
    it_ds = it_ds.batch(batch_size, drop_remainder=drop_remainder)
    workers = int(data_cfg.worker_count)
    if workers > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    description = (
        f"source={data_cfg.source}, split={split}, clips/epoch={n}, batch={batch_size}, "
        f"process {process_index}/{process_count}"
    )
    return HostIterator(it_ds, source, description)
