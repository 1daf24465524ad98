"""Paths users run that no other test reached: checkpoint pruning (`train.keep`), the tokenizer's eval and
sample hooks inside the loop, the text-to-video eval hook inside training with mask-and-replace diffusion end
to end, `eval t2v --fvd_reference`, `bench text`, and the JAX_* / auto-distributed start-up."""

import json

import jax
import numpy as np
import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.train import loop
from motionaura_jax.train.logging import read_metrics

# ffmpeg runs as a fork+exec subprocess: JAX's fork warning does not apply to it.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")


def test_train_keep_prunes_old_checkpoints(tmp_path):
    config = config_lib.load_config(
        "experiments/tiny.py",
        [
            "--config.train.steps=5",
            "--config.train.ckpt_every=1",
            "--config.train.keep=2",
            "--config.mesh.num_devices=1",
        ],
    )
    assert loop.train(config, tmp_path).step == 5
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [4, 5]


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    """vae.py:tiny for 2 steps with its eval and sample hooks on at step 2 (the tokenizer of the t2v test). GAN off:
    not what is tested here (test_vae_train, test_vae_losses), and it is a third of the step's compile time."""
    workdir = tmp_path_factory.mktemp("vae")
    config = config_lib.load_config(
        "experiments/vae.py:tiny",
        ["--config.train.steps=2", "--config.train.eval_every=2", "--config.train.sample_every=2",
         "--config.eval.num_clips=4", "--config.eval.batch_size=4", "--config.mesh.num_devices=1",
         "--config.loss.gan_weight=0"],
    )  # fmt: skip
    loop.train(config, workdir)
    return workdir


def test_tokenizer_eval_and_sample_hooks_run_in_the_loop(tokenizer_run):
    evals = [m for m in read_metrics(tokenizer_run) if any(k.startswith("eval/") for k in m)]
    assert [m["step"] for m in evals] == [2]
    for key in ("eval/psnr", "eval/ssim", "eval/codebook_usage"):
        assert np.isfinite(evals[0][key]), key
    assert (tokenizer_run / "samples" / "recon_0000002.png").stat().st_size > 0


def test_t2v_mask_and_replace_trains_with_its_eval_hook(tokenizer_run, tmp_path):
    workdir = tmp_path / "t2v"
    config = config_lib.load_config(
        "experiments/t2v.py:tiny_mar",
        [f"--config.tokens.tokenizer_workdir={tokenizer_run}", f"--config.tokens.cache={tmp_path / 'cache'}",
         "--config.data.num_clips=16", "--config.train.steps=2", "--config.train.eval_every=2",
         "--config.train.sample_every=2", "--config.mesh.num_devices=1"],
    )  # fmt: skip
    assert config.diffusion.kind == "mask_and_replace"
    loop.train(config, workdir)
    metrics = read_metrics(workdir)
    train = [m for m in metrics if "loss" in m]
    assert len(train) == 2 and all(np.isfinite(m["loss"]) for m in train)
    assert all(0 < m["corrupted_fraction"] for m in train)
    evals = [m for m in metrics if any(k.startswith("eval/") for k in m)]
    assert [m["step"] for m in evals] == [2]
    assert 0.0 <= evals[0]["eval/all_correct"] <= 1.0
    assert (workdir / "samples" / "step_0000002" / "sample_000.mp4").is_file()
    assert json.loads((workdir / "config.json").read_text())["diffusion"]["kind"] == "mask_and_replace"


def test_eval_t2v_with_fvd_reference(tmp_path):
    from motionaura_jax.commands import eval as eval_command
    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.data.video_io import write_video

    shapes = MovingShapes(size=32, split="test", seed=5, num_clips=6)
    for folder, indices in (("videos", range(3)), ("reference", range(3, 6))):
        lines = []
        for i in indices:
            clip = shapes[i]
            write_video(tmp_path / folder / f"{i}.mp4", clip["video"], fps=clip["fps"])
            lines.append(json.dumps({"video": f"{i}.mp4", "caption": clip["caption"]}))
        (tmp_path / folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "metrics.json"
    args = [
        "t2v",
        f"--videos={tmp_path / 'videos'}",
        f"--out={out}",
        f"--fvd_reference={tmp_path / 'reference'}",
    ]
    assert eval_command.main(args) == 0
    metrics = json.loads(out.read_text())
    assert np.isfinite(metrics["fvd"]) and metrics["fvd"] >= 0
    fvd_protocol = metrics["protocol"]["fvd"]
    assert fvd_protocol["num_frames"] == 16, fvd_protocol  # the pinned protocol is recorded beside the value


def test_bench_text_runs(capsys):
    from motionaura_jax.commands import bench

    code = bench.main(["text", "--configs=tiny", "--batch=2", "--max-length=8", "--rounds=1", "--warmup=1"])
    assert code == 0
    table = capsys.readouterr().out
    assert "tiny" in table


@pytest.fixture
def fake_distributed(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    for name in (
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
        "MOTIONAURA_AUTO_DISTRIBUTED",
    ):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_jax_env_start_up(fake_distributed, monkeypatch):
    from motionaura_jax.parallel import distributed

    distributed.initialize()  # nothing set: one process, no runtime
    assert fake_distributed == []
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    distributed.initialize(timeout_s=7)
    assert fake_distributed == [
        dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3, initialization_timeout=7)
    ]
    monkeypatch.delenv("JAX_PROCESS_ID")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        distributed.initialize()


def test_auto_distributed_start_up(fake_distributed, monkeypatch):
    from motionaura_jax.parallel import distributed

    monkeypatch.setenv("MOTIONAURA_AUTO_DISTRIBUTED", "1")
    distributed.initialize(timeout_s=9)
    assert fake_distributed == [dict(initialization_timeout=9)]  # JAX detects the cluster itself
