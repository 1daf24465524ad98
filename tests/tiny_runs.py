"""Tiny runs for the tests of the public API, export and NNX interop: a tokenizer (vae.py:tiny) and a
text-to-video run on it (t2v.py:tiny), each saved as config.json + one checkpoint of its initial train state
(no training step: what is tested is loading, exporting and applying, not learning)."""

from __future__ import annotations

import pathlib

from motionaura_jax import config as config_lib


def save_untrained(config, workdir: pathlib.Path):
    """config.json + one checkpoint (step 1) of a freshly initialised train state (optimizer state included)."""
    from motionaura_jax.train import loop
    from motionaura_jax.train.checkpoint import Checkpointer

    setup = loop.build(config)
    state = loop.init_state(setup)
    config_lib.save_config(config, workdir)
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        checkpointer.save(1, state, data_state={}, meta={"config": config.to_dict()}, wait=True)
    return state


def make_tiny_runs(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """root/vae_tiny and root/t2v_tiny (its tokenizer_workdir is root/vae_tiny); one device each."""
    vae = root / "vae_tiny"
    save_untrained(config_lib.load_config("experiments/vae.py:tiny", ["--config.mesh.num_devices=1"]), vae)
    t2v = root / "t2v_tiny"
    t2v_config = config_lib.load_config(
        "experiments/t2v.py:tiny",
        [f"--config.tokens.tokenizer_workdir={vae}", f"--config.tokens.cache={root / 'cache'}",
         "--config.mesh.num_devices=1"],
    )  # fmt: skip
    save_untrained(t2v_config, t2v)
    return {"vae": vae, "t2v": t2v}
