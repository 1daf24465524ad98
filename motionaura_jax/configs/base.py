"""The keys every stage shares: the loop's and the optimizer's (`train.*`), the mesh's (`mesh.*`), the
sharding rules."""

from __future__ import annotations

import ml_collections


def get_config(task: str) -> ml_collections.ConfigDict:
    """The loop's config for `task` (a name in train/tasks.py); a stage adds model/data/... groups."""
    config = ml_collections.ConfigDict()
    config.task = task
    config.model = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict()
    config.train = ml_collections.ConfigDict(
        dict(
            steps=100,
            batch_size=8,
            # The optimizer every stage builds with train/state.make_optimizer: AdamW after global-norm
            # clipping (grad_clip 0: none), on a warm-up + cosine schedule ("warmup_cosine") or "constant".
            lr=1e-3,
            schedule="warmup_cosine",
            warmup=100,
            b1=0.9,
            b2=0.95,
            weight_decay=0.0,
            grad_clip=1.0,
            seed=0,
            # A workdir whose newest parameters start this run (same model; fresh optimizer, schedule and data):
            # fine-tuning, curricula. Ignored on resume, which restores this run's own checkpoint.
            init_from="",
            log_every=10,
            ckpt_every=100,
            keep=3,  # keep: checkpoints kept on disk
            # Asynchronous saves overlap training; a kill during one loses it, so up to ckpt_every + the steps run
            # while it was in flight are redone. False: each save is committed before the next step.
            async_checkpoint=True,
            # > 0: stop (saving, resumable, like a preemption) once this invocation has run this many minutes,
            # compilation and hooks included: runs compared at equal wall time.
            time_limit_min=0.0,
            eval_every=0,
            sample_every=0,  # 0 = only never (eval/sample hooks of the task)
            profile_start=-1,
            profile_steps=0,  # jax.profiler trace window, written to WORKDIR/profile
            # A NaN/inf in the batch, loss, gradients or new state stops the run naming the step and the quantity
            # (train/finite.py). skip_nonfinite: keep the previous state for such a step and count it instead;
            # more than max_nonfinite skipped steps stop the run. inject_nonfinite: "batch|loss|grads|codebook@STEP"
            # puts a NaN there on purpose (drills, tests).
            skip_nonfinite=False,
            max_nonfinite=10,
            inject_nonfinite="",
        )
    )
    # Axis sizes; -1 fills with the devices left. num_devices=-1 uses all devices.
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, sequence=1, num_devices=-1))
    # Extra (logical name, mesh axes) rules merged over parallel.sharding.DEFAULT_RULES.
    config.sharding = ml_collections.ConfigDict(dict(rules=()))
    return config
