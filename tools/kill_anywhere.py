"""Kill anywhere, resume bit-exact: SIGKILL `motionaura train` at random wall-clock points, re-run the same
command each time, and compare the end with an uninterrupted run of the same command.

    python tools/kill_anywhere.py --runs vae,t2v --points 20 --out runs/reliability/kill
    python tools/kill_anywhere.py --runs tiny --points 4 --out /tmp/kill     # the short form CI runs
    python tools/kill_anywhere.py --runs vae,t2v --points 20 --override train.async_checkpoint=False \
        --phase_kill "t2v=token-cache building" --phase_kill "t2v=sample write" --out ...

For each run: one uninterrupted reference, then chains of attempts in fresh workdirs. Each attempt starts the
same command and is SIGKILLed (its whole process group: ffmpeg children included) after a delay drawn
uniformly from (0, reference wall time); an attempt that finishes first ends its chain, which is then compared.
Kills land wherever the process happens to be; the phase each one hit is read from outside at the instant of
the kill (log lines, Orbax's temporary checkpoint folders, hidden temporary files of atomic writes, the
metrics file), so the report says how often each phase was hit rather than assuming it.

Checked, per attempt: the re-run resumes (exit 0 or killed by us; never an error), and the steps redone (the
highest step logged before the attempt minus the step it resumed from) are at most one checkpoint interval.
Per chain: the final train state (every leaf: parameters, optimizer state, EMA codebook, ...), the step, the
data-iterator state of the final checkpoint, and every metrics line of every attempt (each step's logged values
must equal the reference's) are bit-exact. The report is JSON + markdown.
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
import signal
import subprocess
import sys
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
# Metrics that measure the clock, not the computation.
TIMING_KEYS = ("time", "steps_per_sec", "data_wait_frac")


@dataclasses.dataclass
class RunSpec:
    """One `motionaura train` command: config, overrides ({workdir} is filled in), checkpoint interval."""

    name: str
    config: str
    overrides: list[str]
    ckpt_every: int
    devices: int = 1

    def command(self, workdir: pathlib.Path, **fill: str) -> list[str]:
        args = [o.format(workdir=workdir, **fill) for o in self.overrides]
        return [sys.executable, "-m", "motionaura_jax.cli", "train", f"--config={self.config}",
                f"--workdir={workdir}", *args]  # fmt: skip


def run_specs(tokenizer: str = "") -> dict[str, RunSpec]:
    """The runs the harness knows: the tiny regressor (CI), the tiny tokenizer and the tiny text-to-video run
    (its token cache is built inside the workdir, so token-cache building is killed too)."""
    common = ["--config.train.log_every=1", "--config.mesh.num_devices=1"]
    return {
        "tiny": RunSpec(
            "tiny", "experiments/tiny.py",
            [*common, "--config.train.steps=24", "--config.train.ckpt_every=4", "--config.data.delay_s=0.05"], 4,
        ),
        "vae": RunSpec(
            "vae", "experiments/vae.py:tiny",
            [*common, "--config.train.steps=160", "--config.train.ckpt_every=16"], 16,
        ),
        "t2v": RunSpec(
            "t2v", "experiments/t2v.py:tiny",
            [*common, "--config.train.steps=240", "--config.train.ckpt_every=24", "--config.train.sample_every=120",
             f"--config.tokens.tokenizer_workdir={tokenizer}", "--config.tokens.cache={workdir}/cache"], 24,
        ),
    }  # fmt: skip


COMPILE_CACHE: dict[str, str] = {}  # set by --compile_cache: JAX's persistent cache for every attempt


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    if COMPILE_CACHE:
        env.update(
            JAX_COMPILATION_CACHE_DIR=COMPILE_CACHE["dir"],
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def read_metrics_lines(workdir: pathlib.Path) -> list[dict]:
    """Every complete JSON line of metrics.jsonl; a torn last line (a kill mid-write) is counted apart."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append({"torn": line[:80]})
    return out


def _max_step(workdir: pathlib.Path) -> int:
    return max((int(m["step"]) for m in read_metrics_lines(workdir) if "step" in m), default=0)


def observe_phase(workdir: pathlib.Path, log_text: str, metrics_before: int) -> str:
    """What the process was doing at this instant, seen from outside."""
    ckpt = workdir / "checkpoints"
    if ckpt.exists() and any("tmp" in p.name for p in ckpt.iterdir()):
        return "checkpoint save in flight"
    hidden = [p for p in workdir.rglob(".*") if p.is_file() and not p.name.startswith(".probe")]
    if any("samples" in p.parts or p.suffix in (".mp4", ".gif", ".png") for p in hidden):
        return "sample write"
    if hidden:
        return "atomic file write"
    if "building token cache" in log_text and " INFO task " not in log_text:
        return "token-cache building"
    if " INFO task " not in log_text:
        return "start-up (imports, config, data)"
    if len(read_metrics_lines(workdir)) <= metrics_before:
        return "restore + compile (before the first step)"
    return "training steps / metrics write"


@dataclasses.dataclass
class Attempt:
    chain: int
    attempt: int
    kill_at_s: float | str | None  # seconds after the start, or the phase named by --phase_kill
    killed: bool
    returncode: int | None
    phase: str
    wall_s: float
    resumed_from: int | None
    max_step_before: int
    steps_redone: int | None
    error: str = ""


def run_attempt(
    spec: RunSpec,
    workdir: pathlib.Path,
    kill_at: float | str | None,
    logs: pathlib.Path,
    fill: dict,
    tag: str,
) -> tuple[int | None, bool, str, float, str]:
    """Starts the command; SIGKILLs its process group after `kill_at` s, or (a phase name of `observe_phase`)
    the first time it is seen in that phase; None: let it finish.
    Returns (returncode, killed, phase at the kill, wall seconds, log text)."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{tag}.log"
    metrics_before = len(read_metrics_lines(workdir))
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(
            spec.command(workdir, **fill), cwd=REPO, env=_env(spec.devices), stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        killed, phase = False, ""
        try:
            if isinstance(kill_at, str):
                while proc.poll() is None:
                    seen = observe_phase(workdir, log_path.read_text(errors="replace"), metrics_before)
                    if seen == kill_at:
                        os.killpg(proc.pid, signal.SIGKILL)
                        killed, phase = True, seen
                        break
                    time.sleep(0.005)
                proc.wait()
            else:
                proc.wait(timeout=kill_at)
        except subprocess.TimeoutExpired:
            phase = observe_phase(workdir, log_path.read_text(errors="replace"), metrics_before)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return (
        (None if killed else proc.returncode),
        killed,
        phase,
        time.monotonic() - start,
        log_path.read_text(errors="replace"),
    )


def _resumed_from(log_text: str) -> int | None:
    match = re.search(r"resumed from step (\d+)", log_text)
    return int(match.group(1)) if match else None


def final_checkpoint(workdir: pathlib.Path) -> dict[str, Any]:
    """{"step", "leaves": {path: ndarray}, "data_state"} of the newest checkpoint of a run (restored on CPU)."""
    import jax
    import numpy as np

    from motionaura_jax import config as config_lib
    from motionaura_jax.parallel import mesh as mesh_lib
    from motionaura_jax.train import loop
    from motionaura_jax.train.checkpoint import Checkpointer

    config = config_lib.config_from_json(workdir / "config.json")
    setup = loop.build(config, mesh_lib.make_mesh({"data": 1, "num_devices": 1}))
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        restored = checkpointer.restore(setup.abstract_state)
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(restored.state))[0]
    leaves = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}
    return {"step": restored.step, "leaves": leaves, "data_state": restored.data_state}


def compare_runs(reference: pathlib.Path, candidate: pathlib.Path) -> list[str]:
    """Differences between two finished runs (empty: bit-exact in state, step, data state and metrics)."""
    problems = []
    ref, got = final_checkpoint(reference), final_checkpoint(candidate)
    if ref["step"] != got["step"]:
        problems.append(f"final step {got['step']} != {ref['step']}")
    if ref["data_state"] != got["data_state"]:
        problems.append(f"data-iterator state {got['data_state']} != {ref['data_state']}")
    if set(ref["leaves"]) != set(got["leaves"]):
        problems.append("train-state trees differ")
    for key in sorted(set(ref["leaves"]) & set(got["leaves"])):
        a, b = ref["leaves"][key], got["leaves"][key]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            problems.append(f"state leaf {key} differs")
    problems += compare_metrics(read_metrics_lines(reference), read_metrics_lines(candidate))
    return problems


def compare_metrics(reference: list[dict], candidate: list[dict]) -> list[str]:
    """Every line of `candidate` (all attempts) equals the reference's line of its step, timing keys aside."""
    problems = []
    torn = [m for m in candidate if "torn" in m]
    if torn:
        problems.append(f"{len(torn)} torn metrics line(s): {torn[0]['torn']!r}")
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMING_KEYS}  # noqa: E731
    by_step = {int(m["step"]): strip(m) for m in reference if "step" in m}
    seen = set()
    for line in candidate:
        if "step" not in line:
            continue
        step = int(line["step"])
        seen.add(step)
        if step not in by_step:
            problems.append(f"metrics line for step {step} has no reference line")
        elif strip(line) != by_step[step]:
            diff = sorted(k for k in by_step[step] if strip(line).get(k) != by_step[step][k])
            problems.append(f"metrics at step {step} differ in {diff[:4]}")
    missing = sorted(set(by_step) - seen)
    if missing:
        problems.append(f"no metrics line for steps {missing[:8]}")
    return problems[:20]


def run_reference(spec: RunSpec, root: pathlib.Path, fill: dict) -> tuple[pathlib.Path, float]:
    workdir = root / f"{spec.name}_reference"
    shutil.rmtree(workdir, ignore_errors=True)
    returncode, _, _, wall, text = run_attempt(
        spec, workdir, None, root / "logs", fill, f"{spec.name}_reference"
    )
    if returncode != 0:
        raise RuntimeError(f"reference run {spec.name} failed ({returncode}):\n{text[-3000:]}")
    return workdir, wall


def kill_chains(
    spec: RunSpec,
    root: pathlib.Path,
    *,
    points: int,
    seed: int,
    reference: pathlib.Path,
    reference_wall: float,
    fill: dict,
    max_kills_per_chain: int = 5,
    progress: Any = None,
    phases: tuple[str, ...] = (),
) -> tuple[list[Attempt], list[dict]]:
    """`points` kills over chains of at most `max_kills_per_chain`; each chain is finished and compared. Then
    one chain per name in `phases` whose first attempt is killed the first time the run is seen in that phase
    (short phases such as token-cache building are rarely hit by a random time)."""
    rng = random.Random(seed)
    attempts: list[Attempt] = []
    chains: list[dict] = []
    kills, chain = 0, 0
    targets = list(phases)
    while kills < points or targets:
        workdir = root / f"{spec.name}_chain{chain:02d}"
        shutil.rmtree(workdir, ignore_errors=True)
        chain_kills, number = 0, 0
        while True:
            # The last attempt of a chain runs to the end.
            kill_at: float | str | None = (
                rng.uniform(0.3, reference_wall)
                if kills < points and chain_kills < max_kills_per_chain
                else None
            )
            if kills >= points and targets and number == 0:
                kill_at = targets.pop(0)
            before = _max_step(workdir)
            tag = f"{spec.name}_chain{chain:02d}_attempt{number:02d}"
            returncode, killed, phase, wall, text = run_attempt(
                spec, workdir, kill_at, root / "logs", fill, tag
            )
            resumed = _resumed_from(text)
            # Known only once the attempt logged where it resumed from; killed before that (while restoring) it
            # redid nothing yet. One that ran to the end without resuming started over: all of it was redone.
            if resumed is not None:
                redone = before - resumed
            else:
                redone = before if (before and not killed) else None
            error = ""
            if not killed and returncode != 0:
                error = "\n".join(text.strip().splitlines()[-6:])
            elif "Traceback" in text:
                error = "traceback in the log: " + text.split("Traceback")[1][:400]
            attempt = Attempt(chain, number, kill_at, killed, returncode, phase if killed else "ran to the end",
                              wall, resumed, before, redone, error)  # fmt: skip
            attempts.append(attempt)
            number += 1
            if killed:
                kills += 1
                chain_kills += 1
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix_str(f"{spec.name}: {phase[:28]}")
                continue
            break
        problems = (
            compare_runs(reference, workdir) if attempts[-1].returncode == 0 else ["chain did not finish"]
        )
        chains.append({"chain": chain, "kills": chain_kills, "bit_exact": not problems, "problems": problems})
        chain += 1
    return attempts, chains


def summarize(name: str, spec: RunSpec, attempts: list[Attempt], chains: list[dict]) -> dict[str, Any]:
    killed = [a for a in attempts if a.killed]
    phases: dict[str, int] = {}
    for a in killed:
        phases[a.phase] = phases.get(a.phase, 0) + 1
    redone = [a.steps_redone for a in attempts if a.steps_redone is not None]
    return {
        "run": name,
        "config": spec.config,
        "ckpt_every": spec.ckpt_every,
        "kills": len(killed),
        "attempts": len(attempts),
        "phases": phases,
        "chains": len(chains),
        "chains_bit_exact": sum(c["bit_exact"] for c in chains),
        "refused_to_resume": sum(1 for a in attempts if a.error),
        "max_steps_redone": max(redone, default=0),
        "over_one_interval": sum(1 for r in redone if r > spec.ckpt_every),
    }


def markdown(summaries: list[dict], meta: dict) -> str:
    lines = [
        "# Kill anywhere", "",
        f"commit {meta['commit']}, seed {meta['seed']}, {meta['wall_s']:.0f} s wall, "
        f"compile cache {'on' if meta.get('compile_cache') else 'off'}, overrides {meta.get('overrides') or 'none'}",
        "",
        "| run | kills | attempts | chains bit-exact | refused to resume | max steps redone (interval) | phases hit |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for s in summaries:
        phases = ", ".join(f"{k}: {v}" for k, v in sorted(s["phases"].items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {s['run']} | {s['kills']} | {s['attempts']} | {s['chains_bit_exact']}/{s['chains']} | "
            f"{s['refused_to_resume']} | {s['max_steps_redone']} ({s['ckpt_every']}) | {phases} |"
        )
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default="vae,t2v", help="comma-separated: tiny, vae, t2v")
    parser.add_argument("--points", type=int, default=20, help="SIGKILLs per run")
    parser.add_argument("--per_chain", type=int, default=5, help="kills per chain before it is let finish")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for workdirs, logs, report.json, report.md")
    parser.add_argument(
        "--compile_cache",
        action="store_true",
        help="JAX's persistent compilation cache (OUT/jax_cache) for every run: restarts load the compiled step "
        "instead of compiling it (kills then land in loading it); kill times are drawn over a warm run's wall time",
    )
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="appended to every run's command as --config.KEY=VALUE (e.g. train.async_checkpoint=False)",
    )  # fmt: skip
    parser.add_argument(
        "--phase_kill", action="append", default=[], metavar="RUN=PHASE",
        help="one more chain of RUN killed the first time it is seen in PHASE (a phase of the report, e.g. "
        "'t2v=token-cache building', 't2v=sample write'); repeatable",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from tqdm import tqdm

    phase_kills: dict[str, list[str]] = {}
    for item in args.phase_kill:
        run, _, phase = item.partition("=")
        phase_kills.setdefault(run, []).append(phase)

    extra = [f"--config.{o}" for o in args.override]

    root = pathlib.Path(args.out).absolute()
    root.mkdir(parents=True, exist_ok=True)
    if args.compile_cache:
        COMPILE_CACHE["dir"] = str(root / "jax_cache")
    names = [n for n in args.runs.split(",") if n]
    start = time.monotonic()
    summaries, details = [], {}
    fill: dict[str, str] = {}
    total = args.points * len(names) + sum(len(phase_kills.get(n, ())) for n in names)
    bar = tqdm(total=total, desc="kills", unit="kill", dynamic_ncols=True)
    references: dict[str, tuple[pathlib.Path, float]] = {}
    for name in names:
        if name == "t2v":  # the tokenizer of the t2v run is the vae reference (only read from)
            if "vae" not in references:
                vae_spec = run_specs()["vae"]
                vae_spec = dataclasses.replace(vae_spec, overrides=[*vae_spec.overrides, *extra])
                references["vae"] = run_reference(vae_spec, root, {})
            fill["tokenizer"] = str(references["vae"][0])
        spec = run_specs(fill.get("tokenizer", ""))[name]
        spec = dataclasses.replace(spec, overrides=[*spec.overrides, *extra])
        if name not in references:
            references[name] = run_reference(spec, root, fill)
        reference, wall = references[name]
        if args.compile_cache:  # the reference filled the cache; a warm run sets the range of kill times
            _, wall = run_reference(dataclasses.replace(spec, name=f"{name}_warm"), root, fill)
        attempts, chains = kill_chains(
            spec, root, points=args.points, seed=args.seed, reference=reference, reference_wall=wall, fill=fill,
            max_kills_per_chain=args.per_chain, progress=bar, phases=tuple(phase_kills.get(name, ())),
        )  # fmt: skip
        summary = summarize(name, spec, attempts, chains)
        summary["reference_wall_s"] = round(wall, 1)
        summaries.append(summary)
        details[name] = {"attempts": [dataclasses.asdict(a) for a in attempts], "chains": chains}
    bar.close()
    meta = {
        "commit": _commit(),
        "seed": args.seed,
        "compile_cache": bool(args.compile_cache),
        "overrides": args.override,
        "wall_s": time.monotonic() - start,
        "argv": sys.argv[1:],
    }
    (root / "report.json").write_text(
        json.dumps({"meta": meta, "summary": summaries, "details": details}, indent=1)
    )
    (root / "report.md").write_text(markdown(summaries, meta))
    print(markdown(summaries, meta))
    ok = all(s["chains_bit_exact"] == s["chains"] and not s["refused_to_resume"] for s in summaries)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
