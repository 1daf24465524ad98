"""Tokenizers for the text encoders, all padded/truncated to one fixed length (one compiled shape).

* `ByteTokenizer`: ByT5-style byte-level ids (UTF-8 byte + 3, eos=1, pad=0) that need no file; identical to
  transformers' `ByT5Tokenizer()` and usable with any T5 whose vocabulary has at least 259 entries.
* `FileTokenizer`: a model folder's own tokenizer: `tokenizer.json` through the `tokenizers` library (fast, no
  transformers import), otherwise `transformers.AutoTokenizer` on the folder (e.g. a SentencePiece
  `spiece.model`).

Both return `(ids_bl int32, mask_bl bool)` numpy arrays of shape (len(prompts), max_length).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from motionaura_jax.models.text.loading import ModelFolderError

TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "vocab.txt", "tokenizer_config.json")


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, got a single string; wrap it in a list")
    prompts = list(prompts)
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings; items {bad[:5]} are {type(prompts[bad[0]]).__name__}")
    return prompts


class ByteTokenizer:
    """ByT5 byte-level tokenizer: no vocabulary file, 256 byte ids after 3 specials (pad=0, eos=1, unk=2)."""

    pad_id, eos_id, offset = 0, 1, 3
    vocab_size = 259

    def __init__(self, max_length: int):
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one byte and eos), got {max_length}")
        self.max_length = int(max_length)
        self.identity = f"bytes-v1-L{self.max_length}"

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        prompts = _check_prompts(prompts)
        ids_bl = np.full((len(prompts), self.max_length), self.pad_id, np.int32)
        for row, prompt in enumerate(prompts):
            # Truncate the bytes, keep the eos, as HF truncation with special tokens does.
            tokens = [b + self.offset for b in prompt.encode("utf-8")[: self.max_length - 1]] + [self.eos_id]
            ids_bl[row, : len(tokens)] = tokens
        mask_bl = np.zeros(ids_bl.shape, bool)
        for row, prompt in enumerate(prompts):
            mask_bl[row, : min(len(prompt.encode("utf-8")), self.max_length - 1) + 1] = True
        return ids_bl, mask_bl


class FileTokenizer:
    """A model folder's tokenizer, padded and truncated to `max_length`."""

    def __init__(self, model_dir: str | os.PathLike, max_length: int):
        self.model_dir = pathlib.Path(model_dir)
        self.max_length = int(max_length)
        json_path = self.model_dir / "tokenizer.json"
        digest = hashlib.sha256()
        for name in TOKENIZER_FILES:
            if (self.model_dir / name).is_file():
                digest.update(name.encode() + (self.model_dir / name).read_bytes())
        self.identity = f"file-{digest.hexdigest()[:16]}-L{self.max_length}"
        if json_path.is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(json_path))
            pad_id = self._fast.token_to_id("[PAD]")
            pad_id = self._fast.token_to_id("<pad>") if pad_id is None else pad_id
            self._fast.enable_truncation(self.max_length)
            self._fast.enable_padding(length=self.max_length, pad_id=pad_id or 0)
            self._hf = None
        elif any((self.model_dir / name).is_file() for name in TOKENIZER_FILES):
            from transformers import AutoTokenizer

            self._fast = None
            try:
                self._hf = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            except Exception as err:  # the tokenizer backend may be missing (e.g. sentencepiece)
                raise ModelFolderError(
                    f"cannot build the tokenizer of {str(self.model_dir)!r}: {err}. Save a "
                    f"tokenizer.json there (tokenizer.save_pretrained) or use the byte "
                    f"tokenizer (--tokenizer=bytes)"
                ) from err
        else:
            raise ModelFolderError(
                f"model folder {str(self.model_dir)!r} has no tokenizer file"
                f" (tokenizer.json or spiece.model); copy the tokenizer next to the weights or use the"
                f" byte-level tokenizer (--tokenizer=bytes)"
            )

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        prompts = _check_prompts(prompts)
        if not prompts:
            return np.zeros((0, self.max_length), np.int32), np.zeros((0, self.max_length), bool)
        if self._fast is not None:
            encodings = self._fast.encode_batch(prompts)
            ids_bl = np.asarray([e.ids for e in encodings], np.int32)
            mask_bl = np.asarray([e.attention_mask for e in encodings], bool)
        else:
            out = self._hf(
                prompts,
                padding="max_length",
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            ids_bl, mask_bl = out["input_ids"].astype(np.int32), out["attention_mask"].astype(bool)
        return ids_bl, mask_bl


def has_tokenizer_files(model_dir: str | os.PathLike) -> bool:
    return any((pathlib.Path(model_dir) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(
    model_dir: str | os.PathLike | None, max_length: int, kind: str = "auto"
) -> ByteTokenizer | FileTokenizer:
    """`kind`: "bytes" (no file), "file" (the folder's own), or "auto" (the folder's if present, else an error
    that says how to choose bytes: silently tokenising bytes for a model trained on SentencePiece ids would
    give meaningless embeddings)."""
    if kind == "bytes":
        return ByteTokenizer(max_length)
    if kind not in ("auto", "file"):
        raise ValueError(f"tokenizer kind must be auto, file or bytes, got {kind!r}")
    if model_dir is None:
        raise ValueError("a file tokenizer needs a model folder; pass model_dir or use the byte tokenizer")
    return FileTokenizer(model_dir, max_length)
