"""Text-to-video as an inference pipeline: prompts -> frozen text encoder -> discrete diffusion sampler over the
spectral denoiser -> the frozen tokenizer's decoder -> uint8 videos.

    from motionaura_jax.pipelines import T2VGenerator
    generator = T2VGenerator.load("runs/quickstart/t2v")
    videos = generator.videos(["a red circle moving left"], num_steps=50, guidance_scale=3.0)  # (B,T,H,W,3) uint8
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from motionaura_jax import atomic, paths, runs
from motionaura_jax.data.video_io import to_uint8, write_examples
from motionaura_jax.diffusion import sampler as sampler_lib
from motionaura_jax.diffusion.schedule import schedule_from_config
from motionaura_jax.models.denoiser import SpectralDenoiser
from motionaura_jax.pipelines.tokenizer import Tokenizer
from motionaura_jax.runs import Run


def prompt_encoder(
    config: ml_collections.ConfigDict, max_length: int | None = None
) -> Callable[[list[str]], tuple[np.ndarray, np.ndarray]]:
    """captions -> (embeddings (n, L, D), mask (n, L)) with the frozen text encoder a t2v config names."""
    from motionaura_jax.models.text.encode import encode_text

    t = config.tokens

    def encode(captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return encode_text(
            captions,
            encoder=t.text_encoder,
            model_dir=t.text_model_dir or None,
            max_length=max_length,
            cache_dir=t.text_cache_dir or None,
        )

    return encode


def sampling_kwargs(sample_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """`T2VGenerator.tokens` / `videos` keyword arguments from a run's `config.sample` group."""
    return dict(
        num_steps=int(sample_cfg.num_steps),
        guidance_scale=sample_cfg.guidance_scale,
        temperature=float(sample_cfg.temperature),
        fps=float(sample_cfg.fps),
        seed=int(sample_cfg.seed),
        **sampler_lib.options_from_config(sample_cfg),
    )


class T2VGenerator:
    """Prompts -> videos with a trained denoiser, its frozen tokenizer (decoder) and its frozen text encoder.

    `params` can be swapped (the training loop's sample/eval hooks reuse one generator across steps).

        generator = T2VGenerator.load("runs/t2v_tiny")
        videos = generator.videos(["a red circle moving left"], num_steps=50)   # (B, T, H, W, 3) uint8
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        params: Any,
        tokenizer: Tokenizer | None = None,
        model: SpectralDenoiser | None = None,
    ):
        self.config, self.params = config, params
        self.model = model or SpectralDenoiser(config.model)
        self.schedule = schedule_from_config(config.diffusion, int(config.model.vocab_size))
        self.grid = tuple(int(g) for g in config.tokens.grid)
        self.tokenizer = tokenizer or Tokenizer.load(config.tokens.tokenizer_workdir)
        if self.tokenizer.num_codes != int(config.model.vocab_size):
            raise ValueError(
                f"tokenizer {config.tokens.tokenizer_workdir} has {self.tokenizer.num_codes} codes but the "
                f"denoiser {config.model.vocab_size}; is it the tokenizer it was trained on?"
            )
        self._samplers: dict[tuple, Any] = {}

    @classmethod
    def from_run(cls, run: Run, tokenizer_workdir: str | os.PathLike | None = None) -> T2VGenerator:
        config = run.config
        if tokenizer_workdir:
            config = ml_collections.ConfigDict(config.to_dict())
            config.tokens.tokenizer_workdir = str(tokenizer_workdir)
        return cls(config, run.params, model=run.model)

    @classmethod
    def load(
        cls, workdir: str | os.PathLike, tokenizer_workdir: str | os.PathLike | None = None, **kwargs
    ) -> T2VGenerator:
        """The generator of a text-to-video workdir; kwargs go to `runs.load_run`."""
        return cls.from_run(runs.load_run(workdir, task="t2v", **kwargs), tokenizer_workdir)

    def encode_prompts(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, mask) of the prompts, padded to the text length the denoiser was trained on."""
        return prompt_encoder(self.config, int(self.config.tokens.text_len) or None)(prompts)

    def _sampler(self, num_steps: int, guidance_scale: float | None, temperature: float, options: dict):
        key = (num_steps, guidance_scale, temperature, tuple(sorted(options.items())))
        if key not in self._samplers:

            def run(params, rng, text, mask, fps):
                def denoise(ids, t_b, fps_b, text_bld, mask_bl):
                    return self.model.apply({"params": params}, ids, t_b, fps_b, text_bld, mask_bl)

                return sampler_lib.sample(
                    options.get("method", "posterior"),
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
                    **{k: v for k, v in options.items() if k != "method"},
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
        **options: Any,
    ) -> np.ndarray:
        """Code ids (B, T', H', W') for the prompts. options: method ("posterior" | "confidence"),
        temperature_end, mask_curve, choice_temperature (diffusion/sampler.py `sample`);
        `sampler_options(config.sample)` gives a run's own."""
        text, mask = self.encode_prompts(prompts)
        fps_b = jnp.full((len(prompts),), fps, jnp.float32)
        guidance = None if guidance_scale is None else float(guidance_scale)
        run = self._sampler(int(num_steps), guidance, float(temperature), options)
        return np.asarray(
            run(self.params, jax.random.PRNGKey(seed), jnp.asarray(text), jnp.asarray(mask), fps_b)
        )

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """uint8 videos (B, T, H, W, 3) from code ids."""
        return np.stack([to_uint8(v) for v in self.tokenizer.decode(ids)])

    def videos(self, prompts: list[str], **kwargs) -> np.ndarray:
        return self.decode(self.tokens(prompts, **kwargs))


def write_videos(
    out_dir: str | os.PathLike,
    videos: np.ndarray,
    prompts: list[str],
    fps: float = 8.0,
    names: list[str] | None = None,
) -> list[dict[str, Any]]:
    """MP4 + GIF + PNG per video and a captions.jsonl (the format `motionaura eval t2v` reads)."""
    out = paths.mkdir(out_dir)
    names = names or [f"sample_{i:03d}" for i in range(len(prompts))]
    written, lines = [], []
    for video, prompt, name in zip(videos, prompts, names, strict=True):
        files = write_examples(out / name, video, fps=fps)
        written.append(files)
        lines.append(json.dumps({"video": files["mp4"].name, "caption": prompt}))
    atomic.write_text(out / "captions.jsonl", "\n".join(lines) + "\n")
    return written
