"""`motionaura export`: a run as safetensors + config.json + model card; `runs.load_run` reads the folder without
Orbax and gives outputs bit-identical to the workdir's; damaged or mismatched exports name the tensor."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from motionaura_jax import export, runs
from motionaura_jax.commands import export as export_command
from tests.conftest import run_subprocess
from tests.tiny_runs import make_tiny_runs


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    workdirs = make_tiny_runs(root)
    # What the model card reports: a tokenizer evaluation and the eval lines of the training log.
    (workdirs["vae"] / "eval_recon.json").write_text(json.dumps({"metrics": {"psnr": 21.5, "ssim": 0.81}}))
    (workdirs["vae"] / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "loss": 0.5}) + "\n" + json.dumps({"step": 1, "eval/psnr": 20.25}) + "\n"
    )
    out = {}
    for task, workdir in workdirs.items():
        assert export_command.main([f"--ckpt={workdir}", f"--out={root / f'{task}_export'}"]) == 0
        out[task] = root / f"{task}_export"
    return {"workdirs": workdirs, "exports": out, "root": root}


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_export_folder_layout_and_model_card(exported):
    folder = exported["exports"]["vae"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "export.json", "model.safetensors",
    ]  # fmt: skip
    card = (folder / "README.md").read_text()
    assert "vae model" in card and "source=synthetic" in card and "trained: 1 steps" in card
    assert "psnr: 21.5" in card and "eval/psnr: 20.25" in card  # measured metrics, from both records
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["step"] == 1 and manifest["task"] == "vae"
    assert json.loads((folder / "config.json").read_text())["task"] == "vae"


@pytest.mark.parametrize("task", ["vae", "t2v"])
def test_export_opens_with_safetensors_alone(exported, task):
    from safetensors.numpy import load_file

    tensors = load_file(str(exported["exports"][task] / "model.safetensors"))
    manifest = json.loads((exported["exports"][task] / "export.json").read_text())
    assert {n: list(a.shape) for n, a in tensors.items()} == {
        n: t["shape"] for n, t in manifest["tensors"].items()
    }
    collections = {name.split(".")[0] for name in tensors}
    assert collections == ({"params", "vq"} if task == "vae" else {"params"})
    total = sum(a.size for a in tensors.values())
    print(f"\n{task}: {len(tensors)} tensors, {total} values")
    for name in sorted(tensors):
        print(f"  {name} {tensors[name].dtype} {list(tensors[name].shape)}")


def test_load_export_is_bit_identical_to_the_workdir(exported):
    from motionaura_jax.pipelines import Tokenizer

    vae_run = runs.load_run(exported["workdirs"]["vae"])
    vae_export = runs.load_run(exported["exports"]["vae"])
    assert vae_export.step == vae_run.step == 1 and vae_export.task == "vae"
    _assert_trees_equal(vae_export.variables, vae_run.variables)
    from_workdir, from_export = Tokenizer.from_run(vae_run), Tokenizer.from_run(vae_export)
    video = np.random.default_rng(0).uniform(-1, 1, (2, 5, 16, 16, 3)).astype(np.float32)
    ids = from_workdir.encode(video)
    np.testing.assert_array_equal(from_export.encode(video), ids)
    np.testing.assert_array_equal(from_export.decode(ids), from_workdir.decode(ids))

    t2v_run = runs.load_run(exported["workdirs"]["t2v"])
    t2v_export = runs.load_run(exported["exports"]["t2v"], task="t2v")
    _assert_trees_equal(t2v_export.variables, t2v_run.variables)
    rng = np.random.default_rng(1)
    grid = tuple(t2v_run.config.tokens.grid)
    text_len, text_dim = int(t2v_run.config.tokens.text_len), int(t2v_run.config.model.text_dim)
    inputs = (
        rng.integers(0, 17, (2, *grid)).astype(np.int32),
        np.array([3, 7], np.int32),
        np.array([8.0, 12.0], np.float32),
        rng.normal(size=(2, text_len, text_dim)).astype(np.float32),
        np.ones((2, text_len), bool),
    )
    apply = jax.jit(t2v_run.model.apply)
    np.testing.assert_array_equal(
        np.asarray(apply(t2v_export.variables, *inputs)), np.asarray(apply(t2v_run.variables, *inputs))
    )


def test_sharded_export_with_index(exported, tmp_path):
    out = runs.export_run(exported["workdirs"]["vae"], tmp_path / "sharded", max_shard_bytes=20_000)
    index = json.loads((out / export.INDEX_FILE).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert not (out / export.SINGLE_FILE).exists()
    from safetensors.numpy import load_file

    merged = {}
    for file in files:  # as a Hugging Face user would: the index names each tensor's file
        merged.update(load_file(str(out / file)))
    assert set(merged) == set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in merged.values())
    _assert_trees_equal(runs.load_run(out).variables, runs.load_run(exported["workdirs"]["vae"]).variables)


def _copy(exported, dst):
    """A copy of the tokenizer's export folder, to damage."""
    shutil.copytree(exported["exports"]["vae"], dst)
    return dst


def test_damaged_export_names_the_tensor(exported, tmp_path):
    folder = _copy(exported, tmp_path / "copy")
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    name = sorted(k for k in header if k != "__metadata__")[3]
    start = 8 + header_len + header[name]["data_offsets"][0]
    data[start] ^= 0xFF  # one flipped byte inside one tensor
    path.write_bytes(bytes(data))
    with pytest.raises(runs.RunError, match=f"tensor '{name}' .* does not match its checksum"):
        runs.load_run(folder)
    path.write_bytes(bytes(data[: len(data) // 2]))  # a truncated file: the file is named
    with pytest.raises(runs.RunError, match="model.safetensors is damaged"):
        runs.load_run(folder)


def test_mismatched_export_names_the_tensor(exported, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = _copy(exported, tmp_path / "copy")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["z_channels"] = int(config["model"]["z_channels"]) * 2  # not the model that was exported
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        runs.RunError, match=r"tensor 'params\.\S+' in .* but the model of its config.json needs"
    ):
        runs.load_run(folder)

    folder = _copy(exported, tmp_path / "missing")
    tensors = load_file(str(folder / "model.safetensors"))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(runs.RunError, match=f"tensor '{dropped}' .* is missing"):
        runs.load_run(folder)


def test_export_loads_without_orbax(exported):
    """A fresh interpreter where `import orbax` fails loads the export (and the workdir would not)."""
    code = (
        "import sys; sys.modules['orbax'] = None; sys.modules['orbax.checkpoint'] = None\n"
        "from motionaura_jax import load_run\n"
        f"run = load_run({str(exported['exports']['vae'])!r})\n"
        "print('loaded', run.task, run.step, sorted(run.variables))\n"
    )
    proc = run_subprocess(["-c", code], devices=1)
    assert "loaded vae 1 ['params', 'vq']" in proc.stdout


def test_eval_t2v_ckpt_generates_judges_and_equals_the_library(exported, tmp_path, capsys):
    """`motionaura eval t2v --ckpt`: the figures are the judge's on the videos the library generates with the
    run's own sampling settings and the same seeds; sheets and GIFs are written; bad counts exit 2."""
    import numpy as np

    from motionaura_jax.commands import eval as eval_command
    from motionaura_jax.eval import t2v as t2v_eval
    from motionaura_jax.pipelines.t2v import T2VGenerator, sampling_kwargs

    t2v = exported["workdirs"]["t2v"]  # the tiny text-to-video run (untrained: judged values are arbitrary)
    out = tmp_path / "judged" / "metrics.json"
    argv = ["t2v", f"--ckpt={t2v}", f"--out={out}", "--seen=3", "--heldout=2", "--batch=2", "--seed=5"]
    assert eval_command.main(argv) == 0
    record = json.loads(out.read_text())
    generator = T2VGenerator.load(t2v)
    captions = t2v_eval.judge_captions(3, 2)
    assert captions["heldout"] == ["a red triangle moving left", "a green circle moving up"]
    settings = sampling_kwargs(generator.config.sample)
    settings.pop("seed")
    results, details, videos = t2v_eval.generate_and_judge(generator, captions, batch=2, seed=5, **settings)
    for split in ("seen", "heldout"):
        for key in ("all_correct", "colour", "shape", "direction", "visible_all_frames", "num_videos"):
            assert record[f"{split}/{key}"] == results[split][key], (split, key)
        assert [d["caption"] for d in record["details"][split]] == captions[split]
        assert (tmp_path / "judged" / f"t2v_{split}.png").stat().st_size > 0
    assert record["seen/num_videos"] == 3 and record["heldout/num_videos"] == 2
    assert videos["seen"].shape[0] == 3 and videos["seen"].dtype == np.uint8
    assert "seen: fully correct" in capsys.readouterr().out
    assert eval_command.main(["t2v", f"--ckpt={t2v}", f"--out={out}", "--seen=0", "--heldout=0"]) == 2
    assert "not both 0" in capsys.readouterr().err
    assert (
        eval_command.main(["t2v", f"--ckpt={t2v}", f"--out={out}", "--seen=1", "--heldout=0", "--fvd"]) == 2
    )
    assert "--fvd needs --seen >= 2" in capsys.readouterr().err
    # The tiny run's clips have 5 frames: FVD's I3D protocol takes 16, so --fvd names that and exits 2.
    argv = ["t2v", f"--ckpt={t2v}", f"--out={out}", "--seen=2", "--heldout=0", "--batch=2", "--fvd"]
    assert eval_command.main(argv) == 2
    assert "FVD: FVD protocol takes the first 16 frames but clips have 5" in capsys.readouterr().err
    # --config.sample.* changes the sampling of this evaluation (recorded in its protocol), not the run's config.
    argv = ["t2v", f"--ckpt={t2v}", f"--out={out}", "--seen=2", "--heldout=0", "--batch=2", "--seed=5"]
    assert (
        eval_command.main([*argv, "--config.sample.guidance_scale=4.5", "--config.sample.num_steps=3"]) == 0
    )
    record = json.loads(out.read_text())
    assert record["protocol"]["sampling"]["guidance_scale"] == 4.5
    assert record["protocol"]["sampling"]["num_steps"] == 3
    settings = dict(settings, guidance_scale=4.5, num_steps=3)
    two = {"seen": t2v_eval.judge_captions(2, 0)["seen"]}
    results, _, _ = t2v_eval.generate_and_judge(generator, two, batch=2, seed=5, **settings)
    assert [d["caption"] for d in record["details"]["seen"]] == two["seen"]
    assert record["seen/colour"] == results["seen"]["colour"]
    assert json.loads((t2v / "config.json").read_text())["sample"]["guidance_scale"] != 4.5
    assert eval_command.main([*argv, "--config.sample.guidance_scael=4"]) == 2
    assert "guidance_scale" in capsys.readouterr().err
    assert (
        eval_command.main(["t2v", f"--videos={tmp_path}", f"--out={out}", "--config.sample.num_steps=3"]) == 2
    )
    assert "needs --ckpt" in capsys.readouterr().err
