"""Wrong things in the right place: every command given a missing or empty workdir, a run of the wrong task, a
checkpoint of another model size, a config file with a syntax error, a non-UTF-8 prompt file, an empty prompt,
--num=0, or an output path it cannot write exits 2 with one line naming the thing, no traceback, and writes
nothing. One table, driven in process through `motionaura`'s main.

The runs here are written without training or initialising anything (a config.json, and for the model-size
cases a checkpoint of zeros from the model's abstract shapes), which keeps the whole table within seconds: what
is tested is how the commands refuse inputs, never what a model computes.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess

import jax
import numpy as np
import pytest

from motionaura_jax import cli
from motionaura_jax import config as config_lib

VAE = "experiments/vae.py:tiny"
T2V = "experiments/t2v.py:tiny"
ONE_DEVICE = "--config.mesh.num_devices=1"


def _t2v_config(tokenizer: pathlib.Path, width: int = 32):
    # The fields a token cache would fill (grid, text length, vocabulary, text width), set by hand.
    overrides = [ONE_DEVICE, f"--config.tokens.tokenizer_workdir={tokenizer}", "--config.tokens.grid=(2, 4, 4)",
                 "--config.tokens.text_len=16", "--config.model.vocab_size=32", "--config.model.text_dim=384",
                 f"--config.model.width={width}"]  # fmt: skip
    return config_lib.load_config(T2V, overrides)


def _save_zeros(config, workdir: pathlib.Path, saved_as) -> None:
    """`workdir`: config.json of `config`, and checkpoint 1 holding the inference variables of `saved_as` (zeros
    of its abstract shapes): a folder whose checkpoint is of another model size than its config says."""
    from motionaura_jax import runs
    from motionaura_jax.train.checkpoint import Checkpointer

    config_lib.save_config(config, workdir)
    spec = runs.SPECS[str(saved_as.task)]()
    _, abstract = runs.abstract_variables(saved_as, runs._inference_mesh(saved_as), spec)
    state = {
        spec.collections[c]: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), t)
        for c, t in abstract.items()
    }
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        checkpointer.save(1, state, data_state={}, meta={"config": saved_as.to_dict()}, wait=True)


def _make_read_only(folder: pathlib.Path) -> None:
    """chmod 555; as root (which chmod does not stop) also the immutable attribute, which stops root too."""
    folder.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
    with pytest.raises(OSError):
        (folder / "probe").write_text("x")  # the case is real: this folder refuses a new file


def _undo_read_only(folder: pathlib.Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=False, capture_output=True)
    folder.chmod(0o755)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from motionaura_jax.data import video_io

    root = tmp_path_factory.mktemp("wrong_inputs")
    vae = config_lib.load_config(VAE, [ONE_DEVICE])
    config_lib.save_config(vae, root / "vae")
    t2v = _t2v_config(root / "vae")
    config_lib.save_config(t2v, root / "t2v")
    wide_vae = config_lib.load_config(VAE, [ONE_DEVICE, "--config.model.z_channels=16"])
    _save_zeros(vae, root / "vae_sized", saved_as=wide_vae)
    _save_zeros(t2v, root / "t2v_sized", saved_as=_t2v_config(root / "vae", width=48))
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text('{"task": "t2v", "model": {')
    (root / "quick" / "vae").mkdir(parents=True)
    config_lib.save_config(t2v, root / "quick" / "vae")  # a quickstart folder whose vae/ holds a t2v run
    (root / "bad.py").write_text("def get_config(:\n    return None\n")
    (root / "afile").write_text("a file, not a folder\n")
    (root / "prompts_latin1.txt").write_bytes("a red circle moving left\ncaf\xe9 au lait\n".encode("latin-1"))
    (root / "prompts_blank.txt").write_text("\n   \n")
    (root / "prompts.txt").write_text("a red circle moving left\n")
    (root / "videos_empty").mkdir()
    (root / "videos_latin1").mkdir()
    (root / "videos_latin1" / "captions.jsonl").write_bytes(b'{"video": "a.mp4", "caption": "caf\xe9"}\n')
    video_io.write_video(root / "clip.gif", np.zeros((5, 16, 16, 3), np.uint8), fps=8.0)
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "sketch.png")
    np.savez(root / "tokens.npz", ids=np.zeros((2, 4, 4), np.int32))
    (root / "out").mkdir()
    (root / "ro").mkdir()
    _make_read_only(root / "ro")
    yield root
    _undo_read_only(root / "ro")


# (command line, fragments the one-line error must contain, separated by " | "). {root}: the fixture's folder; {missing}: a path
# that does not exist. Every output goes to {root}/out, {root}/ro (read-only) or under {root}/afile (a file).
CKPT_CASES = {  # --ckpt=...: (folder, fragment) per kind of wrong run
    "missing": ("{missing}", "{missing}/config.json not found"),
    "empty": ("{root}/empty", "{root}/empty/config.json not found"),
    "broken config.json": ("{root}/broken", "{root}/broken/config.json is not a readable config"),
}
VAE_SIDE = {"wrong task": ("{root}/t2v", "holds a 't2v' run, not a 'vae' one"),
            "model size": ("{root}/vae_sized", "different model than its config.json")}  # fmt: skip
T2V_SIDE = {"wrong task": ("{root}/vae", "holds a 'vae' run, not a 't2v' one"),
            "model size": ("{root}/t2v_sized", "different model than its config.json")}  # fmt: skip
INPAINT_SIDE = {"wrong task": ("{root}/vae", "'vae' run"), "model size": T2V_SIDE["model size"]}

OUT_CASES = {  # an output path that cannot be written
    "read-only folder": ("{root}/ro/x", "{root}/ro cannot be written"),
    "folder under a file": ("{root}/afile/sub/x", "{root}/afile is a file"),
}


def _t(template: str, **values: str) -> str:
    """`template` with {key} replaced for the given keys only ({root} and {missing} stay for the test)."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _ckpt_rows(command: str, template: str, side: dict) -> list[tuple[str, str, str]]:
    return [(f"{command}: {case} --ckpt", _t(template, ckpt=folder), fragment)
            for case, (folder, fragment) in {**CKPT_CASES, **side}.items()]  # fmt: skip


def _out_rows(
    command: str, template: str, flag: str = "--out", suffix: str = ""
) -> list[tuple[str, str, str]]:
    return [(f"{command}: {case} {flag}", _t(template, out=path + suffix), f"{flag}={path}{suffix}: " +
             " | " + fragment) for case, (path, fragment) in OUT_CASES.items()]  # fmt: skip


PROMPT = "--prompt 'a red circle moving left'"
SAMPLE = "sample --ckpt={ckpt} " + PROMPT + " --out={out}"
ENCODE = "encode {root}/clip.gif --ckpt={ckpt} --out={out}"
DECODE = "decode {root}/tokens.npz --ckpt={ckpt} --out={out}"
INPAINT = "inpaint --ckpt={ckpt} --video={root}/clip.gif --mask=0,0,8,8 --sketch={root}/sketch.png " + PROMPT
INPAINT += " --out={out}"
TRAIN = "train --config=" + VAE + " " + ONE_DEVICE + " --workdir={ckpt}"

ROWS: list[tuple[str, str, str]] = [
    # train: a missing or empty workdir starts a run, so those are not wrong.
    ("train: wrong task", _t(TRAIN, ckpt="{root}/t2v"), "holds a 't2v' run, not a 'vae' one"),
    ("train: model size", _t(TRAIN, ckpt="{root}/vae_sized"), "holds checkpoints of a different model"),
    ("train: broken config.json", _t(TRAIN, ckpt="{root}/broken"), "its config.json cannot be read"),
    (
        "train: config syntax",
        "train --config={root}/bad.py --workdir={root}/out/run",
        "bad.py:1: syntax error",
    ),
    *_out_rows("train", _t(TRAIN, ckpt="{out}"), "--workdir"),
    *_ckpt_rows("sample", _t(SAMPLE, ckpt="{ckpt}", out="{root}/out/s.mp4"), T2V_SIDE),
    (
        "sample: empty prompt",
        "sample --ckpt={root}/t2v --prompt '' --out={root}/out/s.mp4",
        "--prompt is empty",
    ),
    ("sample: --num=0", _t(SAMPLE, ckpt="{root}/t2v", out="{root}/out/s.mp4") + " --num=0", "--num must be"),
    *_out_rows("sample", _t(SAMPLE, ckpt="{root}/t2v", out="{out}"), suffix=".mp4"),
    *_out_rows(
        "sample",
        _t(SAMPLE, ckpt="{root}/t2v", out="{root}/out/s.mp4") + " --tokens={out}",
        "--tokens",
        ".npz",
    ),  # fmt: skip
    *_ckpt_rows("encode", _t(ENCODE, ckpt="{ckpt}", out="{root}/out/t.npz"), VAE_SIDE),
    (
        "encode: missing video",
        "encode {missing}.mp4 --ckpt={root}/vae --out={root}/out/t.npz",
        "{missing}.mp4",
    ),
    *_out_rows("encode", _t(ENCODE, ckpt="{root}/vae", out="{out}"), suffix=".npz"),
    *_ckpt_rows("decode", _t(DECODE, ckpt="{ckpt}", out="{root}/out/d.mp4"), VAE_SIDE),
    (
        "decode: missing tokens",
        "decode {missing}.npz --ckpt={root}/vae --out={root}/out/d.mp4",
        "{missing}.npz",
    ),
    *_out_rows("decode", _t(DECODE, ckpt="{root}/vae", out="{out}"), suffix=".mp4"),
    *_ckpt_rows("eval recon", "eval recon --ckpt={ckpt} --out={root}/out/r.json", VAE_SIDE),
    *_out_rows("eval recon", "eval recon --ckpt={root}/vae --out={out}", suffix=".json"),
    *_out_rows("eval recon", "eval recon --ckpt={root}/vae --sheet={out}", "--sheet", ".png"),
    *_ckpt_rows("eval t2v", "eval t2v --ckpt={ckpt} --out={root}/out/m.json", T2V_SIDE),
    *_out_rows("eval t2v", "eval t2v --ckpt={root}/t2v --out={out}", suffix=".json"),
    *_out_rows("eval t2v", "eval t2v --ckpt={root}/t2v --out={root}/out/m.json --sheets={out}", "--sheets"),
    ("eval t2v: missing --videos", "eval t2v --videos={missing} --out={root}/out/m.json", "{missing}"),
    (
        "eval t2v: empty --videos",
        "eval t2v --videos={root}/videos_empty --out={root}/out/m.json",
        "videos_empty",
    ),
    (
        "eval t2v: non-UTF-8 captions",
        "eval t2v --videos={root}/videos_latin1 --out={root}/out/m.json",
        "captions.jsonl is not UTF-8",
    ),  # fmt: skip
    (
        "eval t2v: --seen=0 --heldout=0",
        "eval t2v --ckpt={root}/t2v --out={root}/out/m.json --seen=0 --heldout=0",
        "--seen and --heldout",
    ),  # fmt: skip
    *_ckpt_rows("eval inpaint", "eval inpaint --ckpt={ckpt} --out={root}/out/i.json", INPAINT_SIDE),
    *_out_rows("eval inpaint", "eval inpaint --ckpt={root}/t2v --out={out}", suffix=".json"),
    (
        "embed-text: missing prompts",
        "embed-text --prompts={missing}.txt --out={root}/out/e.npz",
        "{missing}.txt",
    ),
    (
        "embed-text: non-UTF-8 prompts",
        "embed-text --prompts={root}/prompts_latin1.txt --out={root}/out/e.npz",
        "prompts_latin1.txt is not UTF-8 (line 2,",
    ),  # fmt: skip
    (
        "embed-text: empty prompts",
        "embed-text --prompts={root}/prompts_blank.txt --out={root}/out/e.npz",
        "prompts_blank.txt holds no prompts",
    ),  # fmt: skip
    *_out_rows("embed-text", "embed-text --prompts={root}/prompts.txt --out={out}", suffix=".npz"),
    *_out_rows("data build", "data build --source synthetic --num-train=4 --out={out}"),
    (
        "data build: missing --path",
        "data build --source folder --path={missing} --out={root}/out/ds",
        "{missing}",
    ),
    ("data show: missing", "data show {missing}", "{missing}"),
    ("data show: empty", "data show {root}/empty", "{root}/empty"),
    ("data export: --num=0", "data export --num=0 --out={root}/out/shapes", "--num must be >= 1"),
    *_out_rows("data export", "data export --num=2 --out={out}"),
    ("data measure: --count=0", "data measure --count=0 --out={root}/out/measure", "--count must be >= 1"),
    *_out_rows("data measure", "data measure --count=2 --out={out}"),
    ("quickstart: wrong task", "quickstart --workdir={root}/quick", "holds a 't2v' run, not a 'vae' one"),
    *_out_rows("quickstart", "quickstart --workdir={out}", "--workdir"),
    *_ckpt_rows("inpaint", _t(INPAINT, ckpt="{ckpt}", out="{root}/out/i.mp4"), INPAINT_SIDE),
    (
        "inpaint: empty prompt",
        _t(INPAINT, ckpt="{root}/t2v", out="{root}/out/i.mp4").replace(PROMPT, "--prompt ''"),
        "--prompt is empty",
    ),  # fmt: skip
    *_out_rows("inpaint", _t(INPAINT, ckpt="{root}/t2v", out="{out}"), suffix=".mp4"),
    *[
        row
        for row in _ckpt_rows("export", "export --ckpt={ckpt} --out={root}/out/exp", T2V_SIDE)
        if "wrong task" not in row[0]
    ],  # fmt: skip
    *_out_rows("export", "export --ckpt={root}/t2v --out={out}"),
    ("compile: config syntax", "compile --config={root}/bad.py --topology=v5e:2x2", "bad.py:1: syntax error"),
    *_out_rows("compile", "compile --config=experiments/tiny.py --topology=v5e:2x2 --out={out}"),
]


def _snapshot(root: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root`, files with their size and modification time: a row must create,
    change or remove none. (A folder's own time changes when a write check creates and removes a file in it.)"""
    found = {}
    for path in root.rglob("*"):
        stat = path.lstat()
        found[str(path.relative_to(root))] = (0, 0) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.mark.parametrize("name, line, fragment", ROWS, ids=[row[0] for row in ROWS])
def test_wrong_input_exits_2_with_one_line_and_writes_nothing(world, capsys, name, line, fragment):
    fill = {"root": str(world), "missing": str(world / "no_such_thing")}
    argv = [arg.format(**fill) for arg in shlex.split(line)]
    before = _snapshot(world)
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, f"{name}: exit {rc}\nstderr:\n{err[-3000:]}"
    assert len(lines) == 1 and "Traceback" not in err, f"{name}: stderr is not one line:\n{err[-3000:]}"
    assert lines[0].startswith(f"motionaura {argv[0]}"), lines[0]
    for part in fragment.format(**fill).split(" | "):
        assert part in lines[0], f"{name}: {lines[0]!r} does not name {part!r}"
    assert _snapshot(world) == before, f"{name}: something was written under {world}"
