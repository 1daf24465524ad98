"""Experiments as code: load `experiments/NAME.py[:ARG]`, apply `--config.a.b=v` overrides, validate.

An experiment file defines `get_config(arg=None) -> ml_collections.ConfigDict`. Overrides are typed by the
value already in the config, so `--config.train.steps=3` stays an int and a typo such as
`--config.trian.steps=3` fails here, before anything is compiled, naming the key and the closest valid ones.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections
from etils import epath

from motionaura_jax import atomic, paths

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A config file, argument or override that cannot be used; the message says which and why."""


def _resolve_experiment_path(path: str) -> pathlib.Path:
    candidates = [pathlib.Path(path)]
    if not os.path.isabs(path):
        candidates.append(REPO_ROOT / path)
        if not path.endswith(".py"):
            candidates.append(REPO_ROOT / "experiments" / f"{path}.py")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in (REPO_ROOT / "experiments").glob("*.py") if not p.stem.startswith("_"))
    close = difflib.get_close_matches(pathlib.Path(path).stem, known, n=3)
    hint = (
        f" Closest experiments: {', '.join(close)}." if close else f" Known experiments: {', '.join(known)}."
    )
    raise ConfigError(f"experiment file {path!r} not found.{hint}")


def load_experiment(spec: str) -> ml_collections.ConfigDict:
    """`experiments/tiny.py` or `experiments/tiny.py:ARG` -> the ConfigDict its `get_config(ARG)` returns."""
    path, _, arg = spec.partition(":")
    file = _resolve_experiment_path(path)
    module_spec = importlib.util.spec_from_file_location(f"motionaura_experiment_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:  # a typo in the file: where it is, not a traceback through importlib
        raise ConfigError(
            f"{file}:{error.lineno}: syntax error ({error.msg}); fix the experiment file"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file} is not UTF-8 text; save it as UTF-8") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{file} defines no get_config(arg=None)")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"{file}: get_config() must return an ml_collections.ConfigDict, got {type(config)}"
        )
    return config


def all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted key of a config, nested dicts included."""
    keys = []
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(all_keys(value, dotted + "."))
    return keys


def _unknown_key_error(config: ml_collections.ConfigDict, dotted: str, bad_part: str) -> ConfigError:
    keys = all_keys(config)
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    close = difflib.get_close_matches(dotted, keys, n=3, cutoff=0.5)
    top = difflib.get_close_matches(bad_part, [k for k in keys if "." not in k], n=3)
    names = list(dict.fromkeys(close + top))
    hint = f" Did you mean: {', '.join(names)}?" if names else ""
    where = f" under {parent!r}" if parent and parent != bad_part else ""
    return ConfigError(f"unknown config key {dotted!r} ({bad_part!r} does not exist{where}).{hint}")


def _parse_value(text: str, current: Any, dotted: str) -> Any:
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{dotted}: expected a bool (true/false), got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--config.{dotted}: expected an int, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{dotted}: expected a float, got {text!r}") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(v.strip() for v in text.split(",") if v.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    # None or another type: a Python literal if it parses, the raw string otherwise.
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Sets `config.<dotted>` from a string, typed like the value it replaces."""
    parts = dotted.split(".")
    node = config
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise _unknown_key_error(config, dotted, part)
        if i < len(parts) - 1:
            node = node[part]
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(
            f"--config.{dotted} names a group; set one of its keys: "
            f"{', '.join(f'{dotted}.{k}' for k in current.keys())}"
        )
    value = _parse_value(text, current, dotted)
    with node.unlocked():
        node[parts[-1]] = value


def split_overrides(argv: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separates `--config.a.b=v` (or `--config.a.b v`) overrides from the other arguments."""
    rest, overrides = [], []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--config."):
            key, eq, value = arg[len("--config.") :].partition("=")
            if not eq:
                if i + 1 >= len(args):
                    raise ConfigError(f"{arg} needs a value: {arg}=VALUE")
                value = args[i + 1]
                i += 1
            overrides.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def load_config(spec: str, overrides: Sequence[str | tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    """Loads an experiment and applies overrides (`"--config.a.b=v"`, `"a.b=v"` or `("a.b", "v")`).

    For example:

        config = load_config("experiments/vae.py:tiny", ["--config.train.steps=10"])
    """
    config = load_experiment(spec)
    for override in overrides:
        if isinstance(override, tuple):
            key, value = override
        else:
            text = override[len("--config.") :] if override.startswith("--config.") else override
            key, eq, value = text.partition("=")
            if not eq:
                raise ConfigError(f"override {override!r} needs the form --config.key=value")
        apply_override(config, key, value)
    config.lock()
    return config


def to_json(config: ml_collections.ConfigDict) -> str:
    return config.to_json_best_effort(indent=2, sort_keys=True)


def save_config(config: ml_collections.ConfigDict, workdir: os.PathLike | str) -> pathlib.Path | epath.Path:
    """Writes the resolved config to `WORKDIR/config.json` (a local folder or a URL such as gs://...)."""
    return atomic.write_text(paths.as_path(workdir) / "config.json", to_json(config) + "\n")


def fill_missing(
    config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict, prefix: str = ""
) -> list[str]:
    """Adds to `config` every key of `defaults` it lacks (recursively; nothing present is changed) and returns
    the dotted names added: a run saved before a key existed loads with that key's default, which is chosen to
    keep the old behaviour."""
    added = []
    for key, value in defaults.items():
        name = f"{prefix}{key}"
        if key not in config:
            with config.unlocked():
                config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
            added.append(name)
        elif isinstance(value, ml_collections.ConfigDict) and isinstance(
            config[key], ml_collections.ConfigDict
        ):
            added += fill_missing(config[key], value, f"{name}.")
    return added


def config_from_json(path: os.PathLike | str) -> ml_collections.ConfigDict:
    """Reads a `config.json` written by `save_config` back (lists become tuples, as in experiment files)."""

    def tuplify(value):
        if isinstance(value, list):
            return tuple(tuplify(v) for v in value)
        if isinstance(value, dict):
            return {k: tuplify(v) for k, v in value.items()}
        return value

    return ml_collections.ConfigDict(tuplify(json.loads(paths.as_path(path).read_text(encoding="utf-8"))))
