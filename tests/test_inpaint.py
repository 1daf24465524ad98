"""Sketch-guided inpainting (issue 14): the inpaint stage on the generic loop over a frozen tiny t2v run, the
`motionaura inpaint` command (token paste-back, contact sheet), `motionaura eval inpaint`, and one clear line
for every bad input (must-show 5)."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motionaura_jax import config as config_lib
from tests.tiny_runs import make_tiny_runs

LOSS_KEY = "loss"  # the train metric of metrics.jsonl


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny untrained tokenizer + t2v runs, and an inpaint run trained 3 steps on the loop."""
    from motionaura_jax import runs
    from motionaura_jax.train import loop

    root = tmp_path_factory.mktemp("inpaint")
    made = make_tiny_runs(root)
    config = config_lib.load_config(
        "experiments/inpaint.py:tiny",
        [f"--config.inpaint.t2v_workdir={made['t2v']}", f"--config.tokens.cache={root / 'icache'}",
         "--config.mesh.num_devices=1", "--config.train.ckpt_every=3"],
    )  # fmt: skip
    base_before = runs.load_run(made["t2v"], task="t2v").params
    result = loop.train(config, root / "inpaint")
    return {**made, "root": root, "inpaint": root / "inpaint", "result": result, "base_before": base_before}


def test_stage_trains_adapters_only_and_keeps_the_base(trained):
    result = trained["result"]
    assert result.step == 3 and np.isfinite(result.last_metrics["loss"])
    state = result.state
    assert set(state.params) == {"lora", "segments", "sketch"}  # the trainable tree only
    for got, want in zip(jax.tree.leaves(state.base), jax.tree.leaves(trained["base_before"]), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # bit-identical after training
    # Optimizer state exists for the trainable leaves only (AdamW mu has exactly the params' structure).
    mu = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    assert jax.tree.structure(mu[0].mu) == jax.tree.structure(state.params)
    config = json.loads((trained["inpaint"] / "config.json").read_text())
    assert config["task"] == "inpaint" and config["model"]["width"] == 32  # the base's denoiser, copied


@pytest.mark.parametrize("mode", ["qkv_fft2", "global_filter", "fnet_mix"])
def test_denoiser_context_defaults_to_t2v_and_reads_out_the_target(mode):
    """Context and sketch tokens add only the segment embeddings; the logits stay the target's; without them
    the forward is the text-to-video one, bit for bit (every spectral mode: mixers are applied per grid)."""
    from motionaura_jax.configs.t2v import denoiser_config
    from motionaura_jax.models.denoiser import SpectralDenoiser, example_inputs

    cfg = denoiser_config("tiny", spectral_mode=mode, depth=1)
    model = SpectralDenoiser(cfg)
    ids, t_b, fps_b, text, mask = example_inputs(cfg, 2, (2, 4, 4), 3)
    ids = jax.random.randint(jax.random.key(1), ids.shape, 0, cfg.vocab_size)
    t_b = jnp.array([3, 7])
    extra = jnp.ones((2, 5, cfg.width))
    plain = jax.eval_shape(model.init, jax.random.key(0), ids, t_b, fps_b, text, mask)
    full = jax.eval_shape(
        lambda r: model.init(r, ids, t_b, fps_b, text, mask, context_ids_bthw=ids, extra_tokens_bsd=extra),
        jax.random.key(0),
    )
    assert set(full["params"]) - set(plain["params"]) == {"inpaint_segments"}
    leaves, tree = jax.tree.flatten(full["params"])  # random params everywhere: every branch is live
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = tree.unflatten([jax.random.normal(k, x.shape) * 0.05 for k, x in zip(keys, leaves, strict=True)])

    @jax.jit
    def forward(params):
        base = {k: v for k, v in params.items() if k != "inpaint_segments"}
        with_context = model.apply(
            {"params": params}, ids, t_b, fps_b, text, mask, context_ids_bthw=ids, extra_tokens_bsd=extra
        )
        t2v = model.apply({"params": base}, ids, t_b, fps_b, text, mask)
        no_context = model.apply({"params": params}, ids, t_b, fps_b, text, mask)
        return with_context, t2v, no_context

    with_context, t2v, no_context = forward(params)
    assert with_context.shape == (2, 2, 4, 4, cfg.vocab_size) and np.isfinite(np.asarray(with_context)).all()
    assert not np.allclose(np.asarray(with_context), np.asarray(t2v))  # the context is seen
    np.testing.assert_array_equal(np.asarray(t2v), np.asarray(no_context))


@pytest.mark.parametrize("mode", ["qkv_fft2", "filter3d"])
def test_channel_fusion_starts_as_t2v_and_reads_context_and_sketch(mode):
    """context_fusion="channel": the sequence stays the target's (so the attention-free filter3d can be
    inpainted), the zero-initialised projection makes a fresh fine-tune the text-to-video model exactly, and
    once trained the output depends on the context ids (through the projection) and on the sketch tokens
    (through cross-attention beside the text)."""
    import flax.linen as nn

    from motionaura_jax.configs.t2v import denoiser_config
    from motionaura_jax.models.denoiser import SpectralDenoiser, example_inputs

    cfg = denoiser_config("tiny", spectral_mode=mode, depth=1)
    model = SpectralDenoiser(cfg, context_fusion="channel")
    ids, t_b, fps_b, text, mask = example_inputs(cfg, 2, (2, 4, 4), 3)
    ids = jax.random.randint(jax.random.key(1), ids.shape, 0, cfg.vocab_size)
    context = jax.random.randint(jax.random.key(3), ids.shape, 0, cfg.vocab_size)
    t_b, mask = jnp.array([3, 7]), mask.at[:, :2].set(True)
    extra = jax.random.normal(jax.random.key(4), (2, 5, cfg.width))
    init = model.init(
        jax.random.key(0), ids, t_b, fps_b, text, mask, context_ids_bthw=context, extra_tokens_bsd=extra
    )
    params = nn.meta.unbox(init["params"])
    segments = params["inpaint_segments"]
    assert set(segments) == {"embedding", "context_fuse"} and not np.asarray(segments["context_fuse"]).any()
    leaves, tree = jax.tree.flatten({k: v for k, v in params.items() if k != "inpaint_segments"})
    keys = jax.random.split(jax.random.key(2), len(leaves))
    base = tree.unflatten(
        [x + jax.random.normal(k, x.shape) * 0.05 for k, x in zip(keys, leaves, strict=True)]
    )

    def forward(params, context, extra):
        return model.apply(
            {"params": params}, ids, t_b, fps_b, text, mask, context_ids_bthw=context, extra_tokens_bsd=extra
        )

    t2v = model.apply({"params": base}, ids, t_b, fps_b, text, mask)
    fresh_out = forward({**base, "inpaint_segments": segments}, context, None)
    assert fresh_out.shape == t2v.shape == (2, 2, 4, 4, cfg.vocab_size)
    np.testing.assert_array_equal(np.asarray(fresh_out), np.asarray(t2v))  # the context is not read at init
    fuse = jax.random.normal(jax.random.key(5), segments["context_fuse"].shape) * 0.1
    trained = {**base, "inpaint_segments": {**segments, "context_fuse": fuse}}
    out = forward(trained, context, extra)
    assert not np.allclose(np.asarray(out), np.asarray(forward(trained, ids, extra)), atol=1e-4)  # context
    assert not np.allclose(
        np.asarray(out), np.asarray(forward(trained, context, 2 * extra)), atol=1e-4
    )  # sketch


@pytest.mark.parametrize("fusion", ["channel", "sequence"])
def test_sketch_grid_starts_as_before_and_places_the_sketch_at_frame0(fusion):
    """sketch_grid: a zero-initialised projection adds each sketch token to the frame-0 target token under it.
    At init the output is the model's without it; once trained the sketch tokens' order matters (cross-attention
    alone cannot see it: permuting its keys leaves the output unchanged); a sketch grid of the wrong size is a
    clear error."""
    import flax.linen as nn

    from motionaura_jax.configs.t2v import denoiser_config
    from motionaura_jax.models.denoiser import SpectralDenoiser, example_inputs

    cfg = denoiser_config("tiny", depth=1)
    gridded = SpectralDenoiser(cfg, context_fusion=fusion, sketch_grid=True)
    plain = SpectralDenoiser(cfg, context_fusion=fusion)
    ids, t_b, fps_b, text, mask = example_inputs(cfg, 2, (2, 4, 4), 3)
    ids = jax.random.randint(jax.random.key(1), ids.shape, 0, cfg.vocab_size)
    t_b, mask = jnp.array([3, 7]), mask.at[:, :2].set(True)
    sketch = jax.random.normal(jax.random.key(4), (2, 16, cfg.width))  # 4x4: the per-frame grid
    kwargs = dict(context_ids_bthw=ids, extra_tokens_bsd=sketch)
    params = nn.meta.unbox(gridded.init(jax.random.key(0), ids, t_b, fps_b, text, mask, **kwargs)["params"])
    segments = params["inpaint_segments"]
    assert "sketch_fuse" in segments and not np.asarray(segments["sketch_fuse"]).any()
    without = {**params, "inpaint_segments": {k: v for k, v in segments.items() if k != "sketch_fuse"}}

    def forward(model, params, sketch):
        return np.asarray(
            model.apply(
                {"params": params}, ids, t_b, fps_b, text, mask, context_ids_bthw=ids, extra_tokens_bsd=sketch
            )
        )

    np.testing.assert_array_equal(forward(gridded, params, sketch), forward(plain, without, sketch))
    trained = {**params, "inpaint_segments": {**segments, "sketch_fuse": 0.1 * jax.random.normal(
        jax.random.key(5), segments["sketch_fuse"].shape)}}  # fmt: skip
    permuted = sketch[:, ::-1]
    if fusion == "channel":  # the sketch reaches cross-attention only, whose keys have no order
        np.testing.assert_allclose(
            forward(plain, without, sketch), forward(plain, without, permuted), atol=1e-5
        )
    assert not np.allclose(forward(gridded, trained, sketch), forward(gridded, trained, permuted), atol=1e-4)
    with pytest.raises(ValueError, match="sketch_channels"):
        gridded.apply({"params": trained}, ids, t_b, fps_b, text, mask, context_ids_bthw=ids,
                      extra_tokens_bsd=sketch[:, :4])  # fmt: skip


def test_channel_fusion_inpaints_an_attention_free_base(tmp_path):
    """The stage end to end on a filter3d text-to-video run with context_fusion="channel" and sketch_grid
    (LoRA): the base stays bit-identical, the segments hold the context and sketch projections, and the loss
    falls on the tiny cache."""
    from motionaura_jax import runs
    from motionaura_jax.train import loop
    from motionaura_jax.train.logging import read_metrics
    from tests.tiny_runs import save_untrained

    made = make_tiny_runs(tmp_path)
    t2v = tmp_path / "t2v_filter3d"
    save_untrained(
        config_lib.load_config(
            "experiments/t2v.py:tiny",
            [f"--config.tokens.tokenizer_workdir={made['vae']}", f"--config.tokens.cache={tmp_path / 'cache'}",
             "--config.mesh.num_devices=1", "--config.model.spectral_mode=filter3d"],
        ),
        t2v,
    )  # fmt: skip
    config = config_lib.load_config(
        "experiments/inpaint.py:tiny",
        [f"--config.inpaint.t2v_workdir={t2v}", f"--config.tokens.cache={tmp_path / 'icache'}",
         "--config.mesh.num_devices=1", "--config.inpaint.context_fusion=channel", "--config.train.steps=30",
         "--config.inpaint.sketch_grid=true",
         "--config.train.lr=3e-3", "--config.train.schedule=constant", "--config.train.batch_size=8",
         "--config.train.log_every=1", "--config.train.ckpt_every=0", "--config.train.sample_every=0",
         "--config.train.eval_every=0"],
    )  # fmt: skip
    base_before = runs.load_run(t2v, task="t2v").params
    result = loop.train(config, tmp_path / "inpaint")
    assert set(result.state.params["segments"]) == {"embedding", "context_fuse", "sketch_fuse"}
    for got, want in zip(jax.tree.leaves(result.state.base), jax.tree.leaves(base_before), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    losses = [m[LOSS_KEY] for m in read_metrics(tmp_path / "inpaint") if LOSS_KEY in m]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    # ... and it samples: `motionaura eval inpaint` on the run (the Inpainter fuses the context the same way).
    from motionaura_jax.commands import eval as eval_command

    out = tmp_path / "eval.json"
    assert (
        eval_command.main(
            ["inpaint", f"--ckpt={tmp_path / 'inpaint'}", f"--out={out}", "--num_clips=1", "--steps=3"]
        )
        == 0
    )
    assert json.loads(out.read_text())["protocol"]["fine_tuned"] is True


@pytest.mark.parametrize("arg", ["tiny", "quickstart", "quickstart_full", "quickstart_sequence"])
def test_inpaint_experiment_builds_from_its_stage_config(arg):
    from motionaura_jax.configs import inpaint

    config = config_lib.load_config(f"experiments/inpaint.py:{arg}")
    assert config_lib.all_keys(config) == config_lib.all_keys(inpaint.get_config()), "experiments add no keys"
    assert config.task == "inpaint" and config.data.with_masks


def test_quickstart_runs_inpainting_after_t2v(tmp_path):
    from motionaura_jax.commands import quickstart

    configs = {task: config for _, task, config in quickstart.stage_configs(tmp_path, [])}
    assert list(configs)[-2:] == ["t2v", "inpaint"]
    assert pathlib.Path(configs["inpaint"].inpaint.t2v_workdir) == tmp_path / "t2v"
    # The inpaint stage can read its base: an attention-free denoiser takes the context by channel fusion only.
    from motionaura_jax.models.spectral import ATTENTION_FREE_MODES

    if configs["t2v"].model.spectral_mode in ATTENTION_FREE_MODES:
        assert configs["inpaint"].inpaint.context_fusion == "channel"


def _write_inputs(tmp_path: pathlib.Path):
    from PIL import Image

    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.data.video_io import write_video

    clip = MovingShapes(frames=5, size=16, split="heldout")[0]
    video = write_video(tmp_path / "in.mp4", clip["video"], fps=8.0, lossless=False)
    mask = tmp_path / "mask.png"
    Image.fromarray(clip["masks"][0].astype(np.uint8) * 255).save(mask)
    sketch = tmp_path / "sketch.png"
    Image.fromarray(clip["sketch"]).save(sketch)
    return clip, video, mask, sketch


def test_inpaint_command_pastes_back_and_writes_the_sheet(trained, tmp_path):
    from motionaura_jax.commands import inpaint as command
    from motionaura_jax.data.video_io import read_video

    clip, video, mask, sketch = _write_inputs(tmp_path)
    out = tmp_path / "out.mp4"
    args = [f"--ckpt={trained['inpaint']}", f"--video={video}", f"--mask={mask}", f"--sketch={sketch}",
            f"--prompt={clip['caption']}", f"--out={out}", "--steps=3", f"--tokens={tmp_path / 'ids.npz'}"]  # fmt: skip
    assert command.main(args) == 0
    frames, _ = read_video(out)
    assert frames.shape == (5, 16, 16, 3)
    assert (tmp_path / "out.png").exists()
    ids = np.load(tmp_path / "ids.npz")
    region = ids["region"]
    assert region.any() and not region.all()
    np.testing.assert_array_equal(ids["ids"][~region], ids["source_ids"][~region])  # pasted back exactly
    # A box mask and pixel paste-back: outside the dilated mask the output is the input, exactly.
    from motionaura_jax.pipelines.inpaint import Inpainter

    inpainter = Inpainter.load(trained["inpaint"])
    masks = np.zeros((1, 5, 16, 16), bool)
    masks[:, :, 4:10, 4:10] = True
    result = inpainter.inpaint(clip["video"][None], masks, clip["sketch"][None], [clip["caption"]],
                               num_steps=3, paste_pixels=True)  # fmt: skip
    outside = ~result["pixel_region"]
    np.testing.assert_array_equal(result["video"][outside], clip["video"][None][outside])
    # The no-fine-tune arm: a t2v run inpaints with paste-back only.
    assert command.main([*args[:1], f"--ckpt={trained['t2v']}", *args[1:5], f"--out={tmp_path / 't.mp4'}",
                         "--steps=3"]) == 0  # fmt: skip


def test_bad_inputs_one_line_exit_2_nothing_written(trained, tmp_path, capsys):
    from PIL import Image

    from motionaura_jax.commands import inpaint as command
    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.data.video_io import write_video

    clip, video, mask, sketch = _write_inputs(tmp_path)
    other = MovingShapes(frames=9, size=32, split="test")[0]
    write_video(
        tmp_path / "mask_size.mp4", np.repeat(other["masks"][..., None] * 255, 3, -1).astype(np.uint8), 8
    )
    write_video(
        tmp_path / "mask_len.mp4", np.repeat(clip["masks"][:3, ..., None] * 255, 3, -1).astype(np.uint8), 8
    )
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "empty.png")
    (tmp_path / "notimage.png").write_text("this is not a PNG")
    Image.fromarray(np.zeros((32, 32), np.uint8) + 255).save(tmp_path / "mask32.png")
    cases = [  # (flag overrides, words the one line must contain)
        ({"--mask": tmp_path / "mask_size.mp4"}, ["--mask", "32x32", "16x16", "same size and length"]),
        ({"--mask": tmp_path / "mask_len.mp4"}, ["--mask", "3 frames", "5 frames"]),
        ({"--mask": tmp_path / "mask32.png"}, ["--mask", "32x32", "16x16", "video's size"]),
        ({"--mask": tmp_path / "empty.png"}, ["--mask", "empty", "white"]),
        ({"--mask": "0,0,40,8"}, ["--mask", "box", "inside the frame"]),
        ({"--sketch": tmp_path / "notimage.png"}, ["--sketch", "not an image", "PNG"]),
        ({"--ckpt": trained["vae"]}, ["--ckpt", "'vae' run", "inpaint or t2v"]),
        ({"--ckpt": tmp_path}, ["--ckpt", "config.json not found"]),
        ({"--video": tmp_path / "missing.mp4"}, ["--video", "missing.mp4"]),
    ]
    base = {"--ckpt": trained["inpaint"], "--video": video, "--mask": mask, "--sketch": sketch,
            "--prompt": clip["caption"], "--out": tmp_path / "out" / "o.mp4"}  # fmt: skip
    for overrides, words in cases:
        argv = [f"{k}={v}" for k, v in {**base, **overrides}.items()]
        assert command.main(argv) == 2, overrides
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        for word in words:
            assert word in err, (word, err)
        assert not (tmp_path / "out").exists()


def test_eval_inpaint_command(trained, tmp_path):
    from motionaura_jax.commands import eval as eval_command

    out = tmp_path / "m.json"
    assert eval_command.main(["inpaint", f"--ckpt={trained['inpaint']}", f"--out={out}", "--num_clips=1",
                              "--steps=3"]) == 0  # fmt: skip
    metrics = json.loads(out.read_text())
    for key in ("all_correct", "colour", "shape", "direction", "psnr_outside", "psnr_outside_recon",
                "psnr_outside_cells", "psnr_outside_cells_recon"):  # fmt: skip
        assert np.isfinite(metrics[key]), key
    assert metrics["num_clips"] == 1
    # The no-fine-tune arm (a t2v run: paste-back only) is evaluated the same way, with a sheet.
    sheet = tmp_path / "none.png"
    assert eval_command.main(["inpaint", f"--ckpt={trained['t2v']}", f"--out={tmp_path / 'n.json'}",
                              "--num_clips=1", "--steps=3", f"--sheet={sheet}"]) == 0  # fmt: skip
    protocol = json.loads((tmp_path / "n.json").read_text())["protocol"]
    assert sheet.exists() and protocol["fine_tuned"] is False and protocol["paste_every_step"] is False
    assert protocol["sampler"]["method"] == "posterior"  # the tiny t2v run's
    assert eval_command.main(["inpaint", f"--ckpt={trained['inpaint']}", f"--out={tmp_path / 'p.json'}",
                              "--num_clips=1", "--steps=3", "--paste_every_step"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "p.json").read_text())["protocol"]["paste_every_step"] is True


def test_inpainter_samples_with_the_runs_sampler_from_the_known_tokens(trained):
    import ml_collections

    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.pipelines.inpaint import Inpainter, sampler_options

    clip = MovingShapes(frames=5, size=16, split="heldout")[0]
    inpainter = Inpainter.load(trained["inpaint"])
    inpainter.config.sample.update(dict(method="confidence", refine_steps=2, paste_every_step=True))
    result = inpainter.inpaint(clip["video"][None], clip["masks"][None], clip["sketch"][None], [clip["caption"]],
                               num_steps=3)  # fmt: skip
    region = result["region"]
    assert region.any() and not region.all() and result["ids"].max() < inpainter.schedule.num_codes
    np.testing.assert_array_equal(result["ids"][~region], result["source_ids"][~region])
    assert sampler_options(inpainter.config.sample)["refine_steps"] == 2
    # A run saved before the sampler keys existed samples as it did: the posterior chain.
    assert sampler_options(ml_collections.ConfigDict(dict(num_steps=50))) == {
        "method": "posterior",
        "temperature_end": None,
    }


def test_sketch_guidance_drops_the_sketch_with_the_text(trained, tmp_path):
    """inpaint.sketch_guidance: where the text is dropped (here always) the sketch is too, so the projection of
    the sketch tokens onto frame 0 (sketch_grid) gets no gradient (with the sketch given it would: the segment
    embeddings beside it do); the border weight trains beside it. At sampling the unconditional branch has no
    sketch, which changes what guidance draws once the sketch matters."""
    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.pipelines.inpaint import Inpainter
    from motionaura_jax.train import loop

    config = config_lib.load_config(
        "experiments/inpaint.py:tiny",
        [f"--config.inpaint.t2v_workdir={trained['t2v']}", f"--config.tokens.cache={trained['root'] / 'icache'}",
         "--config.mesh.num_devices=1", "--config.train.steps=1", "--config.train.text_drop_prob=1.0",
         "--config.inpaint.sketch_grid=True", "--config.inpaint.sketch_guidance=True",
         "--config.inpaint.border_weight=3.0"],
    )  # fmt: skip
    result = loop.train(config, tmp_path / "run")
    assert np.isfinite(result.last_metrics[LOSS_KEY])
    (adam,) = [s for s in jax.tree.leaves(result.state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
               if hasattr(s, "mu")]  # fmt: skip
    moments = {jax.tree_util.keystr(path): float(jnp.abs(m).max())
               for path, m in jax.tree_util.tree_leaves_with_path(adam.mu["segments"])}  # fmt: skip
    (sketch_fuse,) = [v for k, v in moments.items() if "sketch_fuse" in k]
    (embedding,) = [v for k, v in moments.items() if "embedding" in k]
    assert sketch_fuse == 0.0 and embedding > 0.0, moments

    clips = [MovingShapes(frames=5, size=16, split="heldout")[i] for i in range(4)]
    args = [np.stack([c[k] for c in clips]) for k in ("video", "masks", "sketch")]
    inpainter = Inpainter.load(tmp_path / "run")
    inpainter.trainable = jax.tree_util.tree_map_with_path(  # make the sketch matter: a random projection
        lambda path, x: jax.random.normal(jax.random.key(0), x.shape) if "sketch_fuse" in jax.tree_util.keystr(path)
        else x, inpainter.trainable)  # fmt: skip
    guided = inpainter.inpaint(*args, [c["caption"] for c in clips], guidance_scale=4.0, num_steps=3)
    inpainter.config.inpaint.sketch_guidance = False  # the sketch in both branches
    plain = inpainter.inpaint(*args, [c["caption"] for c in clips], guidance_scale=4.0, num_steps=3)
    assert (guided["ids"] != plain["ids"]).any()


def test_full_finetune_arm_learns(trained):
    """The full fine-tune arm on the same cache: the denoiser copy starts at the base run's weights and the
    diffusion loss on the tiny cache falls within 40 steps (the step, the context path and the data agree)."""
    from motionaura_jax.train import loop

    config = config_lib.load_config(
        "experiments/inpaint.py:tiny",
        [f"--config.inpaint.t2v_workdir={trained['t2v']}", f"--config.tokens.cache={trained['root'] / 'icache'}",
         "--config.mesh.num_devices=1", "--config.inpaint.finetune=full", "--config.train.steps=40",
         "--config.train.lr=3e-3", "--config.train.schedule=constant", "--config.train.batch_size=8",
         "--config.train.log_every=1"],
    )  # fmt: skip
    from motionaura_jax.train.logging import read_metrics

    result = loop.train(config, trained["root"] / "inpaint_full")
    losses = [m[LOSS_KEY] for m in read_metrics(trained["root"] / "inpaint_full") if LOSS_KEY in m]
    assert set(result.state.params) == {"denoiser", "segments", "sketch"} and result.state.base is None
    assert len(losses) >= 30, losses
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_shape_word_drop_trains_on_captions_without_the_shape_word(trained, tmp_path):
    """inpaint.shape_word_drop: the cache (its own folder by default) also holds each caption's embedding
    without the shape word, equal to encoding that caption; the stage trains on it; a cache without it is
    refused by name."""
    from motionaura_jax.data.synthetic import caption_without_shape
    from motionaura_jax.data.token_cache import TokenCache
    from motionaura_jax.pipelines.t2v import prompt_encoder
    from motionaura_jax.train import inpaint as stage
    from motionaura_jax.train import loop

    overrides = [f"--config.inpaint.t2v_workdir={trained['t2v']}", "--config.mesh.num_devices=1",
                 "--config.train.steps=2", "--config.inpaint.shape_word_drop=0.5"]  # fmt: skip
    config = config_lib.load_config("experiments/inpaint.py:tiny", overrides)
    result = loop.train(config, tmp_path / "run")
    assert np.isfinite(result.last_metrics[LOSS_KEY])
    folder = pathlib.Path(trained["t2v"]) / "inpaint_cache_train_noshape"
    cache = TokenCache(folder)
    stage.fill_from_t2v(config)
    captions = [caption_without_shape(cache.caption(i)) for i in range(3)]
    assert all(len(c.split()) == 4 for c in captions)
    text, text_mask = prompt_encoder(config, int(config.tokens.text_len))(captions)
    np.testing.assert_allclose(cache.extras["text_noshape"][:3], text, atol=1e-5)
    np.testing.assert_array_equal(cache.extras["text_noshape_mask"][:3], text_mask)
    config = config_lib.load_config(
        "experiments/inpaint.py:tiny", [*overrides, f"--config.tokens.cache={folder}"]
    )
    config.inpaint.shape_word_drop = 0.0
    with pytest.raises(ValueError, match="shape_word_drop"):
        stage.ensure_inpaint_cache(config)


def test_siglip_sketch_encoder_in_the_stage(trained, tmp_path):
    """inpaint.sketch_encoder=siglip (the paper's): a frozen SigLIP tower (tiny, random, saved by transformers)
    feeds the trainable MLP. Only the projector trains; the tower and the base stay bit-identical; the sketch
    reaches the tokens through the tower; the trained run inpaints with it."""
    import torch
    import transformers

    from motionaura_jax.models import sketch as sketch_lib
    from motionaura_jax.pipelines.inpaint import Inpainter
    from motionaura_jax.train import loop

    torch.manual_seed(0)
    hf = transformers.SiglipVisionConfig(
        hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2, image_size=16,
        patch_size=8,
    )  # fmt: skip
    transformers.SiglipVisionModel(hf).save_pretrained(tmp_path / "siglip", safe_serialization=True)
    config = config_lib.load_config(
        "experiments/inpaint.py:tiny",
        [f"--config.inpaint.t2v_workdir={trained['t2v']}", f"--config.tokens.cache={trained['root'] / 'icache'}",
         "--config.mesh.num_devices=1", "--config.inpaint.sketch_encoder=siglip",
         f"--config.inpaint.siglip_dir={tmp_path / 'siglip'}", "--config.train.steps=2"],
    )  # fmt: skip
    _, tower = sketch_lib.load_siglip_vision(tmp_path / "siglip", progress=False)
    result = loop.train(config, tmp_path / "inpaint_siglip")
    state = result.state
    assert result.step == 2 and np.isfinite(result.last_metrics["loss"])
    assert set(state.params) == {"lora", "segments", "sketch"}
    assert set(state.params["sketch"]) == {"fc_in", "fc_out"}  # the MLP projector only
    for got, want in zip(jax.tree.leaves(state.sketch_tower), jax.tree.leaves(tower["params"]), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # frozen: bit-identical
    for got, want in zip(jax.tree.leaves(state.base), jax.tree.leaves(trained["base_before"]), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    inpainter = Inpainter.load(tmp_path / "inpaint_siglip")
    assert inpainter.trainables.siglip.num_patches == 4
    sketches = np.zeros((2, 16, 16, 1), np.uint8)
    sketches[1, 4:12, 4] = 255
    tokens = np.asarray(
        inpainter.trainables.apply({"params": inpainter.trainable}, sketches, inpainter.sketch_tower)
    )
    assert tokens.shape == (2, 4, 32) and not np.allclose(tokens[0], tokens[1])  # the sketch is seen
    clip, *_ = _write_inputs(tmp_path)
    out = inpainter.inpaint(clip["video"][None], clip["masks"][None], clip["sketch"][None], [clip["caption"]],
                            num_steps=3)  # fmt: skip
    assert out["video"].shape == (1, 5, 16, 16, 3)


def test_lora_targets_choose_the_adapted_kernels():
    """inpaint.lora_targets (a path regex) reaches the trainables: "" adapts the default attention and FFN
    kernels, a wider regex adds the adaLN, patch and head kernels; a full fine-tune has no adapters."""
    from flax import traverse_util

    from motionaura_jax.configs import inpaint as inpaint_configs
    from motionaura_jax.configs.t2v import denoiser_config
    from motionaura_jax.models import lora
    from motionaura_jax.models.inpaint import build_trainables, inpaint_lora_config

    cfg = denoiser_config("tiny", depth=2, patch_size=(1, 2, 2))
    i = inpaint_configs.get_config().inpaint
    sketch = jnp.zeros((1, 16, 16, 1), jnp.uint8)

    def adapted(targets):
        i.lora_targets = targets
        shapes = jax.eval_shape(build_trainables(cfg, i, (2, 4, 4)).init, jax.random.key(0), sketch)
        flat = {"/".join(p[:-2]) for p in traverse_util.flatten_dict(shapes["params"]["lora"])}
        assert inpaint_lora_config(cfg, i).targets == (targets or lora.DEFAULT_TARGETS)
        return flat

    default = adapted("")
    assert "blocks/self_attn/query" in default  # scanned blocks
    assert not any("adaln" in p or "head" in p for p in default)
    wider = adapted(
        lora.DEFAULT_TARGETS + r"|(blocks|block_\d+)/adaln/modulation/kernel|patch_embed/kernel|head/kernel"
    )
    assert wider - default == {"blocks/adaln/modulation", "patch_embed", "head"}
    i.finetune = "full"
    assert inpaint_lora_config(cfg, i) is None


def test_token_footprint_inverts_the_token_region():
    """The pixels of a token region are exactly the tokens' cells (frame 0 alone, then `temporal` frames a
    latent frame) and cover the pixel mask the region was made from."""
    from motionaura_jax.pipelines.inpaint import token_footprint, token_region

    rng = np.random.default_rng(0)
    masks = rng.random((2, 9, 16, 16)) < 0.02
    region = token_region(masks, 2, 4)
    footprint = token_footprint(region, 2, 4, 9)
    assert footprint.shape == masks.shape and (footprint | ~masks).all()  # covers every masked pixel
    np.testing.assert_array_equal(token_region(footprint, 2, 4), region)
    one = np.zeros((1, 5, 4, 4), bool)
    one[0, 2, 1, 3] = True  # latent frame 2 = frames 3, 4
    cells = token_footprint(one, 2, 4, 9)
    assert cells.sum() == 2 * 16 and cells[0, 3:5, 4:8, 12:16].all()


def test_region_border_is_the_regions_edge_inside_the_frame():
    """inpaint.border_weight's tokens: region tokens with a 4-neighbour outside the region; a region reaching
    the frame's edge has no border there; a non-positive weight is refused by name."""
    from motionaura_jax.train.inpaint import border_weight, region_border

    region = np.zeros((1, 2, 6, 6), bool)
    region[0, 0, 1:5, 1:5] = True  # a 4x4 block: its 12 outer tokens are border, the 2x2 inside is not
    region[0, 1, :3, :] = True  # the top half of the frame: only its bottom row is border
    border = np.asarray(region_border(jnp.asarray(region)))
    assert border[0, 0].sum() == 12 and not border[0, 0, 2:4, 2:4].any() and border[0, 0, 1, 1:5].all()
    np.testing.assert_array_equal(np.argwhere(border[0, 1])[:, 0], [2] * 6)
    assert not (border & ~region).any()
    config = config_lib.load_config("experiments/inpaint.py:tiny", ["--config.inpaint.border_weight=0"])
    with pytest.raises(ValueError, match="inpaint.border_weight"):
        border_weight(config)


def test_mask_fill_is_the_context_videos_masked_value(trained, tmp_path):
    """inpaint.mask_fill: the masked pixels of the context video take that value (the default -1 is black), the
    cache's context ids change with it and the inpainter reads it from the run; a value outside [-1, 1], or a
    cache built with another fill, is refused by name."""
    from motionaura_jax.data.token_cache import TokenCache
    from motionaura_jax.pipelines.inpaint import Inpainter, masked_video
    from motionaura_jax.train import inpaint as stage
    from motionaura_jax.train import loop

    video = np.full((1, 3, 4, 4, 3), 0.5, np.float32)
    masks = np.zeros((1, 3, 4, 4), bool)
    masks[:, :, 1:3, 1:3] = True
    grey = masked_video(video, masks, 0.0)
    assert (grey[masks] == 0.0).all() and (grey[~masks] == 0.5).all()
    assert (masked_video(video, masks)[masks] == -1.0).all()

    overrides = [f"--config.inpaint.t2v_workdir={trained['t2v']}", "--config.mesh.num_devices=1",
                 "--config.train.steps=1", f"--config.tokens.cache={tmp_path / 'cache'}"]  # fmt: skip
    config = config_lib.load_config(
        "experiments/inpaint.py:tiny", [*overrides, "--config.inpaint.mask_fill=0.0"]
    )
    loop.train(config, tmp_path / "run")
    black, grey = TokenCache(trained["root"] / "icache"), TokenCache(tmp_path / "cache")
    n = min(len(black), len(grey))
    np.testing.assert_array_equal(black.extras["region"][:n], grey.extras["region"][:n])
    assert (black.extras["context_ids"][:n] != grey.extras["context_ids"][:n]).any()
    assert Inpainter.load(tmp_path / "run").mask_fill == 0.0
    config.tokens.cache = ""  # the default folder: one per fill, the black one named as before the key
    assert stage.cache_dir(config).name == "inpaint_cache_train_fill0"

    config = config_lib.load_config(
        "experiments/inpaint.py:tiny", [*overrides, "--config.inpaint.mask_fill=1.5"]
    )
    with pytest.raises(ValueError, match="inpaint.mask_fill"):
        stage.ensure_inpaint_cache(config)
    config = config_lib.load_config("experiments/inpaint.py:tiny", overrides)  # black, on the grey cache
    with pytest.raises(ValueError, match="was built with .*'mask_fill': 0.0"):
        stage.ensure_inpaint_cache(config)
