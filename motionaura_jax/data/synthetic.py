"""Moving Shapes: the procedural benchmark every stage trains and is judged on (DESIGN.md §5).

A clip is one (or two) antialiased coloured shapes moving at constant velocity over a black background.
Every clip is a pure function of (seed, split, index), so datasets need no storage and any worker can
render any index. The caption says the object's colour, shape and direction, and the pixels agree:
the object's interior has the exact RGB of its colour and its centroid moves the stated way.

Compositional generalisation: a fixed set of colour x shape x direction combinations
(`HELD_OUT_COMBINATIONS`, 8 of the 84) never appears in "train"; the "heldout" split (or
`render_clip` with explicit specs) gives clips whose first object uses one of them.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Unit displacement (dx, dy) in image coordinates: x grows to the right, y grows downwards.
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

ALL_COMBINATIONS: tuple[tuple[str, str, str], ...] = tuple(itertools.product(COLOURS, SHAPES, DIRECTIONS))
# Fixed, hand-picked so that every colour, shape and direction still appears in training (only the
# combination is new); 8 of 84 (9.5%). Never sampled for any object of a "train" clip.
HELD_OUT_COMBINATIONS: tuple[tuple[str, str, str], ...] = (
    ("red", "triangle", "left"),
    ("green", "circle", "up"),
    ("blue", "square", "right"),
    ("yellow", "triangle", "down"),
    ("magenta", "circle", "right"),
    ("cyan", "square", "down"),
    ("white", "triangle", "up"),
    ("red", "circle", "down"),
)
TRAIN_COMBINATIONS: tuple[tuple[str, str, str], ...] = tuple(
    c for c in ALL_COMBINATIONS if c not in set(HELD_OUT_COMBINATIONS)
)

SPLITS: dict[str, int] = {"train": 0, "validation": 1, "test": 2, "heldout": 3}
DEFAULT_NUM_CLIPS: dict[str, int] = {"train": 100_000, "validation": 1_000, "test": 1_000, "heldout": 1_000}
DEFAULT_FPS_CHOICES: tuple[float, ...] = (8.0, 12.0, 16.0, 24.0)

MIN_SPEED, MAX_SPEED = 0.5, 2.0  # px / frame
MIN_REL_SIZE, MAX_REL_SIZE = 0.2, 0.4  # object extent / frame side


def held_out_combinations() -> list[tuple[str, str, str]]:
    """The (colour, shape, direction) triples never seen in training, for compositional evaluation."""
    return list(HELD_OUT_COMBINATIONS)


def is_held_out(colour: str, shape: str, direction: str) -> bool:
    return (colour, shape, direction) in HELD_OUT_COMBINATIONS


def object_caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


def caption_of(objects: list[dict[str, Any]]) -> str:
    """`a red circle moving left` or `a red circle moving left and a blue square moving up`."""
    return " and ".join(object_caption(o["colour"], o["shape"], o["direction"]) for o in objects)


def parse_caption(caption: str) -> list[tuple[str, str, str]]:
    """Inverse of `caption_of`; raises ValueError naming the caption when it is not a Moving Shapes one."""
    out = []
    for part in caption.strip().split(" and "):
        words = part.split()
        if (
            len(words) != 5
            or words[0] != "a"
            or words[3] != "moving"
            or words[1] not in COLOURS
            or words[2] not in SHAPES
            or words[4] not in DIRECTIONS
        ):
            raise ValueError(
                f"{caption!r} is not a Moving Shapes caption ('a {{colour}} {{shape}} moving {{direction}}'"
                f" joined by ' and '; colours {list(COLOURS)}, shapes {list(SHAPES)},"
                f" directions {list(DIRECTIONS)})"
            )
        out.append((words[1], words[2], words[4]))
    return out


def caption_without_shape(caption: str) -> str:
    """'a red circle moving left' -> 'a red moving left' (every object of the caption)."""
    return " and ".join(f"a {c} moving {d}" for c, _, d in parse_caption(caption))


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """What to draw; the geometry fields left as None are sampled (so they stay in frame)."""

    colour: str
    shape: str
    direction: str
    size_px: float | None = None  # side of the bounding square
    speed: float | None = None  # px / frame
    start_xy: tuple[float, float] | None = None  # centre at frame 0


def _check_geometry(frames: int, size: int) -> None:
    if frames < 1 or (frames - 1) % 4 != 0:
        raise ValueError(f"Moving Shapes frames={frames}: use 1 + 4k frames (e.g. 9, 17, 33)")
    if size < 8 or size % 8 != 0:
        raise ValueError(f"Moving Shapes size={size}: use a multiple of 8 that is at least 8 (e.g. 32, 64)")


def _sample_geometry(spec: ObjectSpec, frames: int, size: int, rng: np.random.Generator) -> dict[str, Any]:
    """Object size, speed and start so that the whole path stays inside the frame (1 px margin for AA)."""
    steps = frames - 1
    margin = 1.0
    obj = spec.size_px if spec.size_px is not None else rng.uniform(MIN_REL_SIZE, MAX_REL_SIZE) * size
    if spec.speed is None:
        # Keep the path inside the frame: obj + speed * steps <= size - 2 * margin.
        max_speed = MAX_SPEED if steps == 0 else min(MAX_SPEED, (size - 2 * margin - obj) / steps)
        if max_speed < MIN_SPEED:
            # Shrink the object (down to the 20% floor) before giving up.
            obj = max(MIN_REL_SIZE * size, size - 2 * margin - MIN_SPEED * steps)
            max_speed = min(MAX_SPEED, (size - 2 * margin - obj) / steps)
            if max_speed < MIN_SPEED - 1e-9:
                raise ValueError(
                    f"Moving Shapes: {frames} frames at >= {MIN_SPEED} px/frame do not fit in {size} px"
                    f" with an object of {MIN_REL_SIZE:.0%} of the frame; use fewer frames or a larger size"
                )
        speed = rng.uniform(MIN_SPEED, max_speed)
    else:
        speed = float(spec.speed)
    dx, dy = DIRECTIONS[spec.direction]
    travel = speed * steps
    half = obj / 2
    if spec.start_xy is not None:
        start = (float(spec.start_xy[0]), float(spec.start_xy[1]))
    else:
        start = []
        for d in (dx, dy):
            lo, hi = margin + half, size - margin - half
            # Along the motion the start leaves room for the whole travel; across it any place fits.
            if d > 0:
                hi -= travel
            elif d < 0:
                lo += travel
            start.append(rng.uniform(lo, max(lo, hi)))
        start = tuple(start)
    return {"size_px": float(obj), "speed": float(speed), "start_xy": start}


def _shape_sdf(
    shape: str, centre_xy: tuple[float, float], obj: float, px: np.ndarray, py: np.ndarray
) -> np.ndarray:
    """Signed distance in pixels (negative inside) from pixel centres to the shape boundary."""
    cx, cy = centre_xy
    x, y = px - cx, py - cy
    half = obj / 2
    if shape == "circle":
        return np.sqrt(x * x + y * y) - half
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) - half
    if shape == "triangle":
        # Isosceles, apex up, filling the bounding square: apex (0,-h), base corners (+-h, h), h = half.
        # Max of the three edge half-plane distances: exact inside, a close bound outside (enough for AA).
        norm = np.sqrt(5.0)
        right_edge = (2 * x - y - half) / norm
        left_edge = (-2 * x - y - half) / norm
        base = y - half
        return np.maximum(np.maximum(right_edge, left_edge), base)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _outline(mask_hw: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it."""
    padded = np.pad(mask_hw, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask_hw
    return mask_hw & ~interior


def render_clip(
    specs: list[ObjectSpec],
    *,
    frames: int = 17,
    size: int = 64,
    fps: float = 8.0,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
    sketch_frame: int = 0,
) -> dict[str, Any]:
    """Renders the given objects (drawn in order, later ones on top); unset geometry is sampled from `rng`.

    Returns `video` uint8 (T,H,W,3), `caption`, `fps`, `masks` bool (T,H,W) (union of objects),
    `object_masks` bool (N,T,H,W) (each object's own footprint, occlusion ignored), `sketch` uint8 (H,W)
    in {0,255} (outline of all objects at `sketch_frame`) and `objects` (one dict per object).
    """
    _check_geometry(frames, size)
    rng = rng if rng is not None else np.random.default_rng(0)
    for s in specs:
        if s.colour not in COLOURS or s.shape not in SHAPES or s.direction not in DIRECTIONS:
            raise ValueError(
                f"bad object {s}; colours {list(COLOURS)}, shapes {SHAPES}, directions {list(DIRECTIONS)}"
            )
    geometries = [_sample_geometry(s, frames, size, rng) for s in specs]
    return _draw(specs, geometries, frames, size, fps, noise_std, rng, sketch_frame)


def _draw(specs, geometries, frames, size, fps, noise_std, rng, sketch_frame) -> dict[str, Any]:
    coords = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    py, px = np.meshgrid(coords, coords, indexing="ij")
    video = np.zeros((frames, size, size, 3), np.float32)
    object_masks = np.zeros((len(specs), frames, size, size), bool)
    objects = []
    for k, (spec, geo) in enumerate(zip(specs, geometries, strict=True)):
        dx, dy = DIRECTIONS[spec.direction]
        rgb = np.asarray(COLOURS[spec.colour], np.float32)
        for t in range(frames):
            centre = (geo["start_xy"][0] + dx * geo["speed"] * t, geo["start_xy"][1] + dy * geo["speed"] * t)
            sdf = _shape_sdf(spec.shape, centre, geo["size_px"], px, py)
            coverage = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]  # 1-pixel antialiasing ramp
            video[t] = video[t] * (1.0 - coverage) + rgb * coverage
            object_masks[k, t] = sdf <= 0.0
        end = (
            geo["start_xy"][0] + dx * geo["speed"] * (frames - 1),
            geo["start_xy"][1] + dy * geo["speed"] * (frames - 1),
        )
        objects.append(
            {
                "colour": spec.colour,
                "shape": spec.shape,
                "direction": spec.direction,
                "rgb": COLOURS[spec.colour],
                "size_px": geo["size_px"],
                "speed": geo["speed"],
                "start_xy": tuple(geo["start_xy"]),
                "end_xy": end,
            }
        )
    if noise_std > 0:
        video = video + rng.normal(0.0, noise_std, video.shape).astype(np.float32)
    video_u8 = np.clip(np.round(video), 0, 255).astype(np.uint8)
    t_sketch = int(np.clip(sketch_frame, 0, frames - 1))
    sketch = np.zeros((size, size), bool)
    for k in range(len(specs)):
        sketch |= _outline(object_masks[k, t_sketch])
    return {
        "video": video_u8,
        "caption": caption_of(objects),
        "fps": float(fps),
        "masks": object_masks.any(axis=0),
        "object_masks": object_masks,
        "sketch": sketch.astype(np.uint8) * 255,
        "objects": objects,
    }


def _boxes_overlap(geos: list[dict], specs: list[ObjectSpec], frames: int, gap: float = 1.0) -> bool:
    """Whether any two objects' bounding squares come within `gap` px of each other at some frame."""
    t = np.arange(frames)
    paths = []
    for spec, g in zip(specs, geos, strict=True):
        dx, dy = DIRECTIONS[spec.direction]
        paths.append(
            (g["start_xy"][0] + dx * g["speed"] * t, g["start_xy"][1] + dy * g["speed"] * t, g["size_px"] / 2)
        )
    for (xa, ya, ha), (xb, yb, hb) in itertools.combinations(paths, 2):
        if np.any((np.abs(xa - xb) < ha + hb + gap) & (np.abs(ya - yb) < ha + hb + gap)):
            return True
    return False


CAPTION_ORDERS = ("drawn", "left_to_right")


class MovingShapes:
    """Random-access Moving Shapes clips; `ds[i]` is a pure function of (seed, split, i).

    split: "train" (never uses a held-out combination), "validation" / "test" (in-distribution
    combinations, independent draws), "heldout" (one object from `HELD_OUT_COMBINATIONS`, drawn first).
    fps: a fixed FPS for every clip, or None to draw one per clip from `fps_choices`.
    With two objects their colours differ and their paths are kept apart when possible (20 tries).
    caption_order: the order a two-object caption names its objects: "drawn" (the order they were drawn
    in) or "left_to_right" (by their centre at the first frame, left first: reading order, so that which
    phrase goes with which object is seen in the pixels). Objects are drawn in caption order, the later on top,
    which shows only where two paths could not be kept apart.
    """

    def __init__(
        self,
        frames: int = 17,
        size: int = 64,
        num_objects: int = 1,
        split: str = "train",
        seed: int = 0,
        *,
        num_clips: int | None = None,
        fps: float | None = None,
        fps_choices: tuple[float, ...] = DEFAULT_FPS_CHOICES,
        noise_std: float = 0.0,
        sketch_frame: int = 0,
        caption_order: str = "drawn",
    ):
        _check_geometry(frames, size)
        if split not in SPLITS:
            raise ValueError(f"Moving Shapes split {split!r} unknown; use one of {list(SPLITS)}")
        if num_objects not in (1, 2):
            raise ValueError(f"Moving Shapes num_objects={num_objects}: use 1 or 2")
        if noise_std < 0:
            raise ValueError(f"Moving Shapes noise_std={noise_std} must be >= 0")
        if caption_order not in CAPTION_ORDERS:
            raise ValueError(
                f"Moving Shapes caption_order={caption_order!r}: use one of {list(CAPTION_ORDERS)}"
            )
        self.caption_order = caption_order
        self.frames, self.size, self.num_objects = frames, size, num_objects
        self.split, self.seed = split, int(seed)
        self.num_clips = DEFAULT_NUM_CLIPS[split] if num_clips is None else int(num_clips)
        self.fps, self.fps_choices = fps, tuple(fps_choices)
        self.noise_std, self.sketch_frame = float(noise_std), sketch_frame

    @classmethod
    def from_data_config(cls, data_cfg: Any, split: str, num_clips: int | None = None) -> MovingShapes:
        """The clips a `config.data` (configs/data.py) draws for `split`; `num_clips` defaults to its
        `num_clips` (0: the split's default)."""
        return cls(
            frames=int(data_cfg.frames),
            size=int(data_cfg.size),
            num_objects=int(data_cfg.num_objects),
            split=split,
            seed=int(data_cfg.split_seed),
            num_clips=num_clips if num_clips is not None else int(data_cfg.num_clips) or None,
            fps=float(data_cfg.fps) or None,
            noise_std=float(data_cfg.noise_std),
            caption_order=str(data_cfg.caption_order),
        )

    def __len__(self) -> int:
        return self.num_clips

    def __repr__(self) -> str:
        return (
            f"MovingShapes(split={self.split!r}, n={self.num_clips}, frames={self.frames}, size={self.size}, "
            f"num_objects={self.num_objects}, seed={self.seed})"
        )

    def rng_for(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], int(index)])

    def _sample_specs(self, rng: np.random.Generator) -> list[ObjectSpec]:
        pool = HELD_OUT_COMBINATIONS if self.split == "heldout" else TRAIN_COMBINATIONS
        first = pool[rng.integers(len(pool))]
        chosen = [first]
        while len(chosen) < self.num_objects:
            candidates = [c for c in TRAIN_COMBINATIONS if c[0] not in {x[0] for x in chosen}]
            chosen.append(candidates[rng.integers(len(candidates))])
        return [ObjectSpec(*c) for c in chosen]

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += self.num_clips
        if not 0 <= index < self.num_clips:
            raise IndexError(f"index {index} out of range for {self!r}")
        rng = self.rng_for(index)
        specs = self._sample_specs(rng)
        fps = float(self.fps) if self.fps else float(self.fps_choices[rng.integers(len(self.fps_choices))])
        for _ in range(20):
            geos = [_sample_geometry(s, self.frames, self.size, rng) for s in specs]
            if len(specs) < 2 or not _boxes_overlap(geos, specs, self.frames):
                break
        if self.caption_order == "left_to_right":
            order = sorted(range(len(specs)), key=lambda i: tuple(geos[i]["start_xy"]))
            specs, geos = [specs[i] for i in order], [geos[i] for i in order]
        clip = _draw(specs, geos, self.frames, self.size, fps, self.noise_std, rng, self.sketch_frame)
        clip["index"] = index
        return clip

    def compositional_clip(self, colour: str, shape: str, direction: str, index: int = 0) -> dict[str, Any]:
        """A clip of exactly this object (e.g. a held-out combination); geometry drawn from (seed, index)."""
        rng = np.random.default_rng([self.seed, 1000 + SPLITS[self.split], int(index)])
        fps = float(self.fps) if self.fps else float(self.fps_choices[rng.integers(len(self.fps_choices))])
        return render_clip(
            [ObjectSpec(colour, shape, direction)],
            frames=self.frames,
            size=self.size,
            fps=fps,
            noise_std=self.noise_std,
            rng=rng,
            sketch_frame=self.sketch_frame,
        )
