"""Fuzzed video folders: bad and odd files mixed with good clips, through `motionaura data build`, `data show`
and training from the folder.

    python tools/fuzz_videos.py --out runs/reliability/fuzz --bad 110 --good 12
    python tools/fuzz_videos.py --out /tmp/fuzz --bad 20 --good 4 --no-train   # a short form

Files (each kind cycled until --bad files exist): truncated at random offsets, bit flips in the header and in
the payload, random bytes, zero bytes, a text file / PNG / JPEG named as a video, audio-only MP4, 1-frame
videos, greyscale, 16-bit, odd sizes (63x65, 1x1, 17x3), variable frame rate, rotated-metadata (phone) video,
a huge declared frame size (GIF screen, MJPEG SOF), a symlink loop, a dangling symlink, a folder and a FIFO
named .mp4, an unreadable (mode 000) file. Each file has an expectation: "good" (must be kept), "bad" (must be
named once in the log with a reason) or "odd" (kept, or named with a reason; never dropped without a word).

Checks per command: exit 0, no traceback, within --timeout; every good clip kept; every bad file named exactly
once with its reason (`skipping ... video PATH: REASON`); the counts in the metrics (`data build`'s summary,
training's metrics.jsonl) equal the files named. The report is JSON + markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Made:
    name: str
    kind: str
    expect: str  # good | bad | odd


def _ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-v", "error", "-y", *args], check=True, capture_output=True, timeout=60)


def _clip(rng: random.Random, frames: int = 17, size: int = 32):
    from motionaura_jax.data.synthetic import MovingShapes

    shapes = MovingShapes(frames=frames, size=size, num_clips=64, seed=7)
    return shapes[rng.randrange(64)]


def _lavfi(out: pathlib.Path, *, size: str = "32x32", frames: int = 17, extra: tuple[str, ...] = ()) -> None:
    _ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=8", "-frames:v", str(frames), *extra, str(out))


def _flip_bits(data: bytes, rng: random.Random, lo: int, hi: int, count: int) -> bytes:
    buf = bytearray(data)
    hi = max(lo + 1, min(hi, len(buf)))
    for _ in range(count):
        i = rng.randrange(lo, hi)
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _huge_gif(path: pathlib.Path, width: int, height: int) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(path, format="GIF")
    data = bytearray(path.read_bytes())
    data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")  # the logical screen
    path.write_bytes(bytes(data))


def _mjpeg_huge(path: pathlib.Path) -> None:
    _lavfi(path, extra=("-c:v", "mjpeg"))
    data = bytearray(path.read_bytes())
    for match in re.finditer(rb"\xff\xc0", bytes(data)):  # SOF0: length(2) precision(1) height(2) width(2)
        at = match.start() + 5
        data[at : at + 4] = (30000).to_bytes(2, "big") + (30000).to_bytes(2, "big")
    path.write_bytes(bytes(data))


def make_folder(out: pathlib.Path, *, bad: int, good: int, seed: int = 0) -> list[Made]:
    """Writes `good` good clips and at least `bad` bad or odd files (+ captions.jsonl) into `out`."""
    from PIL import Image

    from motionaura_jax.data import video_io

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    made: list[Made] = []
    captions = []
    for i in range(good):
        clip = _clip(rng)
        suffix = (".mp4", ".webm", ".gif", ".avi", ".MP4")[i % 5] if i else ".mp4"
        name = f"good_{i:03d}{suffix}"
        video_io.write_video(out / name, clip["video"], fps=8.0)
        made.append(Made(name, "good clip", "good"))
        captions.append({"video": name, "caption": clip["caption"]})
    source = (out / "good_000.mp4").read_bytes()

    def truncated(path):
        path.write_bytes(source[: rng.randrange(1, len(source) - 1)])

    def header_flip(path):
        path.write_bytes(_flip_bits(source, rng, 0, 64, rng.randrange(1, 6)))

    def payload_flip(path):
        path.write_bytes(_flip_bits(source, rng, len(source) // 4, len(source), rng.randrange(4, 64)))

    def random_bytes(path):
        path.write_bytes(rng.randbytes(rng.randrange(16, 4096)))

    def zero_bytes(path):
        path.write_bytes(b"")

    def text_file(path):
        path.write_text("this is not a video\n" * rng.randrange(1, 20))

    def png_as_video(path):
        Image.new("RGB", (32, 32), (0, 128, 255)).save(path, format="PNG")

    def jpeg_as_video(path):
        Image.new("RGB", (32, 32), (0, 128, 255)).save(path, format="JPEG")

    def audio_only(path):
        _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))

    def one_frame(path):
        video_io.write_video(path, _clip(rng)["video"][:1], fps=8.0)

    def greyscale(path):
        _lavfi(path, extra=("-pix_fmt", "gray", "-c:v", "ffv1"))

    def sixteen_bit(path):
        _lavfi(path, extra=("-pix_fmt", "gray16le", "-c:v", "ffv1"))

    def sixteen_bit_rgb(path):
        _lavfi(path, extra=("-pix_fmt", "rgb48le", "-c:v", "ffv1"))

    def odd_size(path, size="63x65"):
        _lavfi(path, size=size, extra=("-pix_fmt", "yuv444p", "-c:v", "libx264"))

    def variable_fps(path):
        _lavfi(path, frames=30, extra=("-vf", "setpts='PTS+random(0)*0.3/TB*N'", "-fps_mode", "vfr"))

    def rotated(path):
        _lavfi(
            path, size="48x32", extra=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-metadata:s:v", "rotate=90")
        )

    def huge_gif(path):
        _huge_gif(path, 60000, 60000)

    def huge_gif_mid(path):
        _huge_gif(path, 12000, 10000)

    def huge_mjpeg(path):
        _mjpeg_huge(path)

    def unreadable(path):
        path.write_bytes(source)
        path.chmod(0)

    # (kind, suffix, make, expectation). "odd": a decoder may or may not make sense of it.
    kinds: list[tuple[str, str, Callable, str]] = [
        ("truncated", ".mp4", truncated, "odd"),
        ("bit flips in header", ".mp4", header_flip, "odd"),
        ("bit flips in payload", ".mp4", payload_flip, "odd"),
        ("random bytes", ".mp4", random_bytes, "bad"),
        ("zero bytes", ".mp4", zero_bytes, "bad"),
        ("zero bytes", ".gif", zero_bytes, "bad"),
        ("text file", ".mp4", text_file, "bad"),
        ("PNG", ".mp4", png_as_video, "odd"),
        ("JPEG", ".mov", jpeg_as_video, "odd"),
        ("audio only", ".mp4", audio_only, "bad"),
        ("1 frame", ".mp4", one_frame, "bad"),
        ("1 frame", ".gif", one_frame, "bad"),
        ("greyscale", ".mkv", greyscale, "good"),
        ("16-bit grey", ".mkv", sixteen_bit, "good"),
        ("16-bit RGB", ".mkv", sixteen_bit_rgb, "good"),
        ("odd size 63x65", ".mp4", odd_size, "good"),
        ("odd size 1x1", ".mp4", lambda p: odd_size(p, "1x1"), "odd"),
        ("odd size 17x3", ".mp4", lambda p: odd_size(p, "17x3"), "odd"),
        ("variable frame rate", ".mkv", variable_fps, "good"),
        ("rotated metadata", ".mp4", rotated, "good"),
        ("huge declared size (GIF 60000x60000)", ".gif", huge_gif, "bad"),
        ("huge declared size (GIF 12000x10000)", ".gif", huge_gif_mid, "bad"),
        ("huge declared size (MJPEG 30000x30000)", ".avi", huge_mjpeg, "odd"),
        ("unreadable (mode 000)", ".mp4", unreadable, "bad" if os.geteuid() != 0 else "good"),
    ]
    index = 0
    while len(made) - good < bad:
        kind, suffix, make, expect = kinds[index % len(kinds)]
        name = f"x_{index:03d}_{re.sub(r'[^a-z0-9]+', '_', kind.lower()).strip('_')[:24]}{suffix}"
        make(out / name)
        made.append(Made(name, kind, expect))
        index += 1
    # Things that are not files at all, once each.
    os.symlink("loop_b.mp4", out / "loop_a.mp4")
    os.symlink("loop_a.mp4", out / "loop_b.mp4")
    os.symlink("nowhere.mp4", out / "dangling.mp4")
    (out / "folder.mp4").mkdir()
    os.mkfifo(out / "fifo.mp4")
    for name, kind in (("loop_a.mp4", "symlink loop"), ("loop_b.mp4", "symlink loop"),
                       ("dangling.mp4", "dangling symlink"), ("folder.mp4", "folder named .mp4"),
                       ("fifo.mp4", "FIFO named .mp4")):  # fmt: skip
        made.append(Made(name, kind, "bad"))
    # captions.jsonl entries that must be named: outside the folder, absolute, missing, dangling.
    captions += [
        {"video": "../outside.mp4", "caption": "escape"},
        {"video": "/etc/hostname", "caption": "absolute"},
        {"video": "missing.mp4", "caption": "not there"},
        {"video": "dangling.mp4", "caption": "dangling symlink"},
    ]
    (out / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))
    return made


SKIP_LINE = re.compile(r"skipping (?:unreadable|short) video (.+?): (.+)$")


def named_in_log(log_text: str, root: pathlib.Path) -> dict[str, list[str]]:
    """File name -> the reasons the log gave for skipping it (one per time it was named)."""
    named: dict[str, list[str]] = {}
    for line in log_text.splitlines():
        match = SKIP_LINE.search(line)
        if match:
            name = os.path.relpath(match.group(1), root)
            named.setdefault(name, []).append(match.group(2).strip())
    return named


def run_command(args: list[str], log_path: pathlib.Path, timeout: float) -> tuple[int | str, float, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "motionaura_jax.cli", *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            rc: int | str = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = "hang"
    return rc, time.monotonic() - start, log_path.read_text(errors="replace")


def check(made: list[Made], named: dict[str, list[str]], kept: set[str] | None) -> dict:
    """Per expectation: files kept, named once, named more than once, dropped without a word, wrongly named."""
    out = {"good_kept": 0, "good_total": 0, "bad_named_once": 0, "bad_total": 0, "odd_kept": 0,
           "odd_named": 0, "odd_total": 0, "named_twice": [], "silent": [], "good_lost": [], "bad_kept": []}  # fmt: skip
    for m in made:
        times = len(named.get(m.name, []))
        is_kept = kept is not None and m.name in kept
        if times > 1:
            out["named_twice"].append(m.name)
        if m.expect == "good":
            out["good_total"] += 1
            if is_kept or (kept is None and times == 0):
                out["good_kept"] += 1
            else:
                out["good_lost"].append(f"{m.name} ({m.kind}): {named.get(m.name)}")
        elif m.expect == "bad":
            out["bad_total"] += 1
            out["bad_named_once"] += times == 1
            if is_kept:
                out["bad_kept"].append(m.name)
            elif times == 0:
                out["silent"].append(f"{m.name} ({m.kind})")
        else:
            out["odd_total"] += 1
            out["odd_kept"] += is_kept or (kept is None and times == 0)
            out["odd_named"] += times >= 1
            if kept is not None and not is_kept and times == 0:
                out["silent"].append(f"{m.name} ({m.kind})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--bad", type=int, default=110, help="bad or odd files (at least)")
    parser.add_argument("--good", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per command before it is a hang")
    parser.add_argument("--train_steps", type=int, default=6)
    parser.add_argument("--no-train", dest="train", action="store_false")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    root = pathlib.Path(args.out).absolute()
    shutil.rmtree(root, ignore_errors=True)
    folder = root / "videos"
    start = time.monotonic()
    made = make_folder(folder, bad=args.bad, good=args.good, seed=args.seed)
    kinds: dict[str, int] = {}
    for m in made:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    commands = {
        "data build": ["data", "build", "--source", "folder", "--path", str(folder), "--out", str(root / "built"),
                       "--frames", "5", "--size", "16"],
        "data show": ["data", "show", str(root / "built"), "--count", "2", "--examples", str(root / "shown")],
    }  # fmt: skip
    if args.train:
        commands["train from the folder"] = [
            "train", "--config=experiments/vae.py:tiny", f"--workdir={root / 'train'}",
            "--config.data.source=folder", f"--config.data.path={folder}", "--config.mesh.num_devices=1",
            f"--config.train.steps={args.train_steps}", "--config.train.log_every=1",
        ]  # fmt: skip
    results = {}
    for label, command in tqdm(commands.items(), desc="commands", dynamic_ncols=True):
        rc, wall, text = run_command(command, root / f"{label.replace(' ', '_')}.log", args.timeout)
        named = named_in_log(text, folder)
        result = {"rc": rc, "wall_s": round(wall, 1), "traceback": "Traceback" in text}
        if label != "data show":
            kept = None
            if label == "data build" and rc == 0:
                summary = json.loads(text[text.index("{") : text.rindex("}") + 1])
                counts = summary.get("source_folder", {})
                kept_n = int(summary["splits"]["train"]) if "splits" in summary else None
                result["counted"] = counts
                result["kept"] = kept_n
                # Nothing kept but unnamed beyond the files made: the kept count is the files not named.
                result["kept_matches_unnamed"] = kept_n == sum(1 for m in made if m.name not in named)
            if label == "train from the folder" and rc == 0:
                metrics = [
                    json.loads(line) for line in (root / "train" / "metrics.jsonl").read_text().splitlines()
                ]
                result["counted"] = {k: v for k, v in metrics[-1].items() if k.startswith("data/")}
            result.update(check(made, named, kept))
            result["named"] = sum(len(v) for v in named.values())
            result["reasons"] = sorted({r.split(":")[0][:60] for v in named.values() for r in v})
        else:
            result["clips_shown"] = len(re.findall(r"^\[\d+\]", text, re.M))
        results[label] = result
    report = {"files": len(made), "bad_or_odd": sum(m.expect != "good" for m in made),
              "good": sum(m.expect == "good" for m in made), "kinds": kinds, "results": results,
              "wall_s": round(time.monotonic() - start, 1), "made": [dataclasses.asdict(m) for m in made]}  # fmt: skip
    (root / "report.json").write_text(json.dumps(report, indent=1))
    lines = [f"# Fuzzed video folder: {report['files']} files ({report['bad_or_odd']} bad or odd, "
             f"{report['good']} good), {report['wall_s']} s", "",
             "| command | exit | wall s | traceback | good kept | bad named once | odd kept / named | silent drops |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, r in results.items():
        if "good_total" in r:
            lines.append(f"| {label} | {r['rc']} | {r['wall_s']} | {r['traceback']} | {r['good_kept']}/{r['good_total']} "
                         f"| {r['bad_named_once']}/{r['bad_total']} | {r['odd_kept']} / {r['odd_named']} of "
                         f"{r['odd_total']} | {len(r['silent'])} |")  # fmt: skip
        else:
            lines.append(
                f"| {label} | {r['rc']} | {r['wall_s']} | {r['traceback']} | {r['clips_shown']} clips shown | | | |"
            )
    (root / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    ok = all(r["rc"] == 0 and not r["traceback"] and not r.get("silent") and not r.get("good_lost")
             and not r.get("named_twice") and not r.get("bad_kept") for r in results.values())  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
