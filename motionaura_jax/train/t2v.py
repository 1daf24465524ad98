"""The text-to-video stage on the generic loop: discrete diffusion over the frozen tokenizer's code ids.

    motionaura train --config=experiments/t2v_tiny.py --workdir=runs/t2v_tiny

Data are a token cache (`data/token_cache.py`): code ids of the frozen tokenizer run tokens.tokenizer_workdir
and frozen text embeddings of the captions; `make_task` builds it on first use (single process; resumable).
It then fills `tokens.grid`, `tokens.text_len`, `model.vocab_size` and `model.text_dim` from it, so the
saved config.json is enough to rebuild the model for sampling (`T2VGenerator.from_workdir`).

One step: drop the text with p = train.text_drop_prob (CFG), draw t ~ U[0, T) and z_t ~ q(z_t | z_0), run the
SpectralDenoiser on (z_t, t, fps, text) and take `diffusion.losses.diffusion_losses` (VLB + λ·CE by default).
The sample hook writes MP4/GIF/PNG for `sample.prompts`; the eval hook generates `eval.num_videos` clips of
training captions and scores them with the pixel judge of Moving Shapes (fraction with every object right).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from motionaura_jax import atomic
from motionaura_jax.config import base_config
from motionaura_jax.data.pipeline import data_config
from motionaura_jax.diffusion.losses import corrupt, diffusion_losses, drop_text
from motionaura_jax.diffusion.sampler import sample_tokens
from motionaura_jax.diffusion.schedule import schedule_from_config
from motionaura_jax.train.task import Task

log = logging.getLogger("motionaura")


@flax.struct.dataclass
class T2VState:
    params: Any
    opt_state: Any


def t2v_config() -> ml_collections.ConfigDict:
    """Every key of the text-to-video stage with its default; experiments start here and override."""
    from motionaura_jax.models.denoiser import denoiser_config

    config = base_config("t2v")
    config.model = denoiser_config("tiny", vocab_size=0, text_dim=0)  # both filled from the token cache
    config.diffusion = ml_collections.ConfigDict(
        dict(
            kind="absorbing",  # or "mask_and_replace" (VQ-Diffusion); paper_notes §8.7
            num_timesteps=100,
            alpha_cum_start=0.99999,
            alpha_cum_end=0.000009,
            gamma_cum_start=0.000009,
            gamma_cum_end=0.99999,
            objective="vlb",  # or "masked_ce" (absorbing only)
            aux_weight=5e-4,
            aux_positions="corrupted",
            adaptive_aux=True,
            mask_weight=(1.0, 1.0),
            ce_weighting="elbo",
        )
    )
    # Clips the token cache is built from (any data source; Moving Shapes by default).
    config.data = data_config(size=32, with_masks=False)
    config.tokens = ml_collections.ConfigDict(
        dict(
            tokenizer_workdir="",  # the trained tokenizer run (required)
            cache="",  # default: <tokenizer_workdir>/token_cache_<split>
            split="train",
            num_clips=0,
            shard_size=256,
            batch_size=16,
            text_encoder="minilm",
            text_model_dir="",
            text_max_length=0,
            text_cache_dir="",
            grid=(),
            text_len=0,  # filled from the cache
        )
    )
    config.train.update(
        dict(
            steps=1000,
            batch_size=16,
            lr=3e-4,
            warmup=100,
            weight_decay=0.01,
            b1=0.9,
            b2=0.95,
            grad_clip=1.0,
            text_drop_prob=0.1,
        )
    )
    config.sample = ml_collections.ConfigDict(
        dict(
            prompts=("a red circle moving left", "a blue square moving up"),
            num_steps=50,
            guidance_scale=3.0,
            temperature=1.0,
            fps=8.0,
            seed=0,
        )
    )
    config.eval = ml_collections.ConfigDict(dict(num_videos=16, batch_size=8))
    return config


def cache_dir(config: ml_collections.ConfigDict) -> pathlib.Path:
    t = config.tokens
    if t.cache:
        return pathlib.Path(t.cache)
    if not t.tokenizer_workdir:
        raise ValueError(
            "t2v needs the trained tokenizer: set --config.tokens.tokenizer_workdir=VAE_WORKDIR "
            "(or --config.tokens.cache=DIR of a built token cache)"
        )
    return pathlib.Path(t.tokenizer_workdir) / f"token_cache_{t.split}"


def ensure_token_cache(config: ml_collections.ConfigDict):
    """The TokenCache of this config, built first if it is missing or unfinished (one process only)."""
    from motionaura_jax.data import token_cache

    folder = cache_dir(config)
    if not token_cache.is_complete(folder):
        if jax.process_count() > 1:
            raise RuntimeError(
                f"token cache {folder} is missing or unfinished; build it with one process first"
            )
        if not config.tokens.tokenizer_workdir:
            raise ValueError(f"token cache {folder} is not finished and no tokens.tokenizer_workdir is set")
        t = config.tokens
        log.info("building token cache %s from tokenizer %s", folder, t.tokenizer_workdir)
        token_cache.build_token_cache(
            folder,
            tokenizer_workdir=t.tokenizer_workdir,
            data_cfg=config.data,
            split=t.split,
            num_clips=int(t.num_clips),
            shard_size=int(t.shard_size),
            batch_size=int(t.batch_size),
            text_encoder=t.text_encoder,
            text_model_dir=t.text_model_dir or None,
            text_max_length=int(t.text_max_length) or None,
            text_cache_dir=t.text_cache_dir or None,
        )
    return token_cache.TokenCache(folder)


def _fill_from_cache(config: ml_collections.ConfigDict) -> None:
    if config.tokens.grid and config.model.vocab_size and config.model.text_dim and config.tokens.text_len:
        return
    cache = ensure_token_cache(config)
    config.tokens.grid = tuple(cache.grid)
    config.tokens.text_len = int(cache.meta["text_len"])
    config.model.vocab_size = int(cache.num_codes)
    config.model.text_dim = int(cache.meta["text_dim"])


def _optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    t = config.train
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, t.lr, max(1, int(t.warmup)), max(int(t.steps), int(t.warmup) + 1), end_value=t.lr * 0.1
    )
    return optax.chain(
        optax.clip_by_global_norm(t.grad_clip),
        optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay),
    )


def make_t2v_step(config: ml_collections.ConfigDict, model, schedule, tx):
    drop_prob = float(config.train.text_drop_prob)

    def train_step(state: T2VState, batch: dict, rng: jax.Array, step: jax.Array) -> tuple[T2VState, dict]:
        rng_text, rng_corrupt, rng_dropout = jax.random.split(rng, 3)
        ids = batch["ids"].astype(jnp.int32)
        text, text_mask, _ = drop_text(rng_text, batch["text"], batch["text_mask"], drop_prob)
        z_t, t_b = corrupt(rng_corrupt, schedule, ids)

        def loss_fn(params):
            logits = model.apply(
                {"params": params},
                z_t,
                t_b,
                batch["fps"],
                text,
                text_mask,
                deterministic=False,
                rngs={"dropout": rng_dropout},
            )
            metrics = diffusion_losses(schedule, logits, ids, z_t, t_b, config.diffusion)
            return metrics["loss"], metrics

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        return T2VState(params=params, opt_state=opt_state), metrics

    return train_step


def make_task(config: ml_collections.ConfigDict, mesh: Mesh) -> Task:
    from motionaura_jax.models.denoiser import SpectralDenoiser

    _fill_from_cache(config)
    model = SpectralDenoiser(config.model)
    schedule = schedule_from_config(config.diffusion, int(config.model.vocab_size))
    tx = _optimizer(config)
    grid = tuple(int(g) for g in config.tokens.grid)
    text_len, text_dim = int(config.tokens.text_len), int(config.model.text_dim)

    def init_state(rng: jax.Array) -> T2VState:
        ids = jnp.zeros((1, *grid), jnp.int32)
        params = model.init(
            {"params": rng},
            ids,
            jnp.zeros((1,), jnp.int32),
            jnp.zeros((1,), jnp.float32),
            jnp.zeros((1, text_len, text_dim), jnp.float32),
            jnp.ones((1, text_len), bool),
        )["params"]
        return T2VState(params=params, opt_state=tx.init(params))

    def make_data(process_index: int, process_count: int):
        from motionaura_jax.data.token_cache import TokenCacheIterator

        return TokenCacheIterator(
            ensure_token_cache(config),
            global_batch=int(config.train.batch_size),
            seed=int(config.train.seed),
            process_index=process_index,
            process_count=process_count,
        )

    generator: dict[str, T2VGenerator] = {}

    def get_generator(params) -> T2VGenerator:
        if "g" not in generator:
            generator["g"] = T2VGenerator(config, params)
        generator["g"].params = params
        return generator["g"]

    def sample_fn(state: T2VState, step: int, workdir: pathlib.Path) -> None:
        s = config.sample
        prompts = list(s.prompts)
        out = pathlib.Path(workdir) / "samples" / f"step_{step:07d}"
        videos = get_generator(state.params).videos(
            prompts,
            num_steps=s.num_steps,
            guidance_scale=s.guidance_scale,
            temperature=s.temperature,
            fps=s.fps,
            seed=s.seed,
        )
        write_videos(out, videos, prompts, fps=s.fps)

    def eval_fn(state: T2VState, step: int, workdir: pathlib.Path) -> dict[str, float]:
        from motionaura_jax.eval import judge

        s, e = config.sample, config.eval
        cache = ensure_token_cache(config)
        prompts = [cache.caption(i) for i in np.linspace(0, len(cache) - 1, int(e.num_videos)).astype(int)]
        gen = get_generator(state.params)
        scores = []
        for start in range(0, len(prompts), int(e.batch_size)):
            chunk = prompts[start : start + int(e.batch_size)]
            videos = gen.videos(
                chunk,
                num_steps=s.num_steps,
                guidance_scale=s.guidance_scale,
                temperature=s.temperature,
                fps=s.fps,
                seed=s.seed + start,
            )
            scores.extend(judge.judge_and_score(v, c) for v, c in zip(videos, chunk, strict=True))
        metrics = judge.aggregate(scores)
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

    return Task(
        init_state=init_state,
        train_step=make_t2v_step(config, model, schedule, tx),
        make_data=make_data,
        eval_fn=eval_fn,
        sample_fn=sample_fn,
    )


# ----------------------------------------------------------------------------------------------------------
# Generation: text → sampler → tokenizer decoder → uint8 video


class T2VGenerator:
    """Prompts → videos with a trained denoiser and its frozen tokenizer (decoder) and text encoder."""

    def __init__(self, config: ml_collections.ConfigDict, params: Any):
        from motionaura_jax.models.denoiser import SpectralDenoiser
        from motionaura_jax.models.vqvae import VQVAE
        from motionaura_jax.train.loop import restore_state

        self.config, self.params = config, params
        self.model = SpectralDenoiser(config.model)
        self.schedule = schedule_from_config(config.diffusion, int(config.model.vocab_size))
        self.grid = tuple(int(g) for g in config.tokens.grid)
        tok_config, tok_state, _ = restore_state(config.tokens.tokenizer_workdir)
        if int(tok_config.model.quantizer.num_codes) != int(config.model.vocab_size):
            raise ValueError(
                f"tokenizer {config.tokens.tokenizer_workdir} has {tok_config.model.quantizer.num_codes} "
                f"codes but the denoiser {config.model.vocab_size}; is it the tokenizer it was trained on?"
            )
        self.tokenizer = VQVAE(tok_config.model)
        self.tok_variables = {"params": tok_state.params, "vq": tok_state.vq}
        self._decode = jax.jit(lambda v, ids: self.tokenizer.apply(v, ids, method="decode_ids"))
        self._samplers: dict[tuple, Any] = {}

    @classmethod
    def from_workdir(cls, workdir: str | os.PathLike) -> T2VGenerator:
        from motionaura_jax.train.loop import restore_state

        config, state, _ = restore_state(workdir)
        return cls(config, state.params)

    def encode_prompts(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from motionaura_jax.models.text.encode import encode_text

        t = self.config.tokens
        return encode_text(
            prompts,
            encoder=t.text_encoder,
            model_dir=t.text_model_dir or None,
            max_length=int(t.text_len) or None,
            cache_dir=t.text_cache_dir or None,
        )

    def _sampler(self, num_steps: int, guidance_scale: float | None, temperature: float):
        key = (num_steps, guidance_scale, temperature)
        if key not in self._samplers:

            def run(params, rng, text, mask, fps):
                def denoise(ids, t_b, fps_b, text_bld, mask_bl):
                    return self.model.apply({"params": params}, ids, t_b, fps_b, text_bld, mask_bl)

                return sample_tokens(
                    denoise,
                    self.schedule,
                    rng,
                    grid_thw=self.grid,
                    text_bld=text,
                    text_mask_bl=mask,
                    fps_b=fps,
                    num_steps=num_steps,
                    guidance_scale=guidance_scale,
                    temperature=temperature,
                )

            self._samplers[key] = jax.jit(run)
        return self._samplers[key]

    def tokens(
        self,
        prompts: list[str],
        *,
        num_steps: int = 50,
        guidance_scale: float | None = 3.0,
        temperature: float = 1.0,
        fps: float = 8.0,
        seed: int = 0,
    ) -> np.ndarray:
        """Code ids (B, T', H', W') for the prompts."""
        text, mask = self.encode_prompts(prompts)
        fps_b = jnp.full((len(prompts),), fps, jnp.float32)
        guidance = None if guidance_scale is None else float(guidance_scale)
        run = self._sampler(int(num_steps), guidance, float(temperature))
        return np.asarray(
            run(self.params, jax.random.PRNGKey(seed), jnp.asarray(text), jnp.asarray(mask), fps_b)
        )

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """uint8 videos (B, T, H, W, 3) from code ids."""
        from motionaura_jax.data.video_io import to_uint8

        video = np.asarray(self._decode(self.tok_variables, jnp.asarray(ids, jnp.int32)))
        return np.stack([to_uint8(v) for v in video])

    def videos(self, prompts: list[str], **kwargs) -> np.ndarray:
        return self.decode(self.tokens(prompts, **kwargs))


def write_videos(
    out_dir: str | os.PathLike,
    videos: np.ndarray,
    prompts: list[str],
    fps: float = 8.0,
    names: list[str] | None = None,
) -> list[dict[str, pathlib.Path]]:
    """MP4 + GIF + PNG per video and a captions.jsonl (the format `motionaura eval t2v` reads)."""
    from motionaura_jax.data.video_io import write_examples

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = names or [f"sample_{i:03d}" for i in range(len(prompts))]
    written, lines = [], []
    for video, prompt, name in zip(videos, prompts, names, strict=True):
        paths = write_examples(out / name, video, fps=fps)
        written.append(paths)
        lines.append(json.dumps({"video": paths["mp4"].name, "caption": prompt}))
    atomic.write_text(out / "captions.jsonl", "\n".join(lines) + "\n")
    return written
