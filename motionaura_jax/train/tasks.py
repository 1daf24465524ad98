"""The stages `motionaura train` knows, by `config.task`. Each entry is `module:make_task(config, mesh) -> Task`."""

from __future__ import annotations

import difflib
import importlib

from jax.sharding import Mesh

from motionaura_jax.train.task import Task

TASKS = {
    "tiny": "motionaura_jax.train.tiny:make_task",
    "vae": "motionaura_jax.train.vae:make_task",
    "t2v": "motionaura_jax.train.t2v:make_task",
    "inpaint": "motionaura_jax.train.inpaint:make_task",
}


def make_task(config, mesh: Mesh) -> Task:
    name = config.task
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3)
        raise ValueError(
            f"unknown task {name!r} (config.task); known: {sorted(TASKS)}"
            + (f"; did you mean {close[0]!r}?" if close else "")
        )
    module_name, _, function = TASKS[name].partition(":")
    return getattr(importlib.import_module(module_name), function)(config, mesh)
