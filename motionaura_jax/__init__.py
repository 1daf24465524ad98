"""motionaura_jax: a trainable JAX/Flax MotionAura. The entry points a researcher needs (docs/api.md shows them):

    import motionaura_jax as ma
    run = ma.load_run("runs/vae_tiny")                     # a workdir or an export folder: config, model, variables
    tokenizer = ma.Tokenizer.load("runs/vae_tiny")         # video <-> code ids
    videos = ma.T2VGenerator.load("runs/t2v_tiny").videos(["a red circle moving left"])
    model = ma.VQVAE(ma.vae_model_config())                # the Linen modules and their default configs
    nnx_model = ma.to_nnx(run.model, video_bthwc, variables=run.variables)   # the same weights in Flax NNX
    ma.export_run("runs/vae_tiny", "exports/vae_tiny")     # safetensors + config.json + model card

Names are imported on first use, so `import motionaura_jax` (and the `motionaura` command) stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute); imported lazily by __getattr__ (PEP 562).
_EXPORTS: dict[str, tuple[str, str]] = {
    # runs and inference pipelines
    "load_run": ("motionaura_jax.runs", "load_run"),
    "Run": ("motionaura_jax.runs", "Run"),
    "RunError": ("motionaura_jax.runs", "RunError"),
    "export_run": ("motionaura_jax.runs", "export_run"),
    "Tokenizer": ("motionaura_jax.pipelines.tokenizer", "Tokenizer"),
    "T2VGenerator": ("motionaura_jax.pipelines.t2v", "T2VGenerator"),
    "encode_text": ("motionaura_jax.models.text.encode", "encode_text"),
    # models and their configs
    "VQVAE": ("motionaura_jax.models.vqvae", "VQVAE"),
    "VectorQuantizer": ("motionaura_jax.models.quantizer", "VectorQuantizer"),
    "SpectralDenoiser": ("motionaura_jax.models.denoiser", "SpectralDenoiser"),
    "T5Encoder": ("motionaura_jax.models.text.t5", "T5Encoder"),
    "BertEncoder": ("motionaura_jax.models.text.bert", "BertEncoder"),
    "vae_model_config": ("motionaura_jax.configs.vae", "model_config"),
    "quantizer_config": ("motionaura_jax.configs.vae", "quantizer_config"),
    "denoiser_config": ("motionaura_jax.configs.t2v", "denoiser_config"),
    "t5_config": ("motionaura_jax.models.text.t5", "t5_config"),
    "BertConfig": ("motionaura_jax.models.text.bert", "BertConfig"),
    "load_config": ("motionaura_jax.config", "load_config"),
    # Flax NNX and meshes
    "to_nnx": ("motionaura_jax.models.interop", "to_nnx"),
    "linen_variables": ("motionaura_jax.models.interop", "linen_variables"),
    "use_mesh": ("motionaura_jax.parallel.sharding", "use_mesh"),
    "make_mesh": ("motionaura_jax.parallel.mesh", "make_mesh"),
}

__all__ = [  # the same names as _EXPORTS (a literal, for linters)
    "BertConfig",
    "BertEncoder",
    "Run",
    "RunError",
    "SpectralDenoiser",
    "T2VGenerator",
    "T5Encoder",
    "Tokenizer",
    "VQVAE",
    "VectorQuantizer",
    "denoiser_config",
    "encode_text",
    "export_run",
    "linen_variables",
    "load_config",
    "load_run",
    "make_mesh",
    "quantizer_config",
    "t5_config",
    "to_nnx",
    "use_mesh",
    "vae_model_config",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'motionaura_jax' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from motionaura_jax.config import load_config
    from motionaura_jax.configs.t2v import denoiser_config
    from motionaura_jax.configs.vae import model_config as vae_model_config
    from motionaura_jax.configs.vae import quantizer_config
    from motionaura_jax.models.denoiser import SpectralDenoiser
    from motionaura_jax.models.interop import linen_variables, to_nnx
    from motionaura_jax.models.quantizer import VectorQuantizer
    from motionaura_jax.models.text.bert import BertConfig, BertEncoder
    from motionaura_jax.models.text.encode import encode_text
    from motionaura_jax.models.text.t5 import T5Encoder, t5_config
    from motionaura_jax.models.vqvae import VQVAE
    from motionaura_jax.parallel.mesh import make_mesh
    from motionaura_jax.parallel.sharding import use_mesh
    from motionaura_jax.pipelines.t2v import T2VGenerator
    from motionaura_jax.pipelines.tokenizer import Tokenizer
    from motionaura_jax.runs import Run, RunError, export_run, load_run
