"""Inference pipelines over trained runs: the tokenizer (video <-> code ids) and the text-to-video generator.

from motionaura_jax.pipelines import Tokenizer, T2VGenerator
tokenizer = Tokenizer.load("runs/quickstart/vae")
generator = T2VGenerator.load("runs/quickstart/t2v")
"""

from motionaura_jax.pipelines.t2v import T2VGenerator, write_videos
from motionaura_jax.pipelines.tokenizer import Tokenizer, decode_chunked, encode_chunked

__all__ = ["T2VGenerator", "Tokenizer", "decode_chunked", "encode_chunked", "write_videos"]
