"""Multi-process start-up through JAX's own runtime (TPU pods, GPU clusters, CPU over gloo)."""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)

_ENV = {
    "coordinator": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_count: int | None = None,
    timeout_s: int = 300,
) -> None:
    """Starts `jax.distributed` when more than one process is asked for; a no-op for a single process.

    Arguments fall back to JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID. With none of them set
    and `MOTIONAURA_AUTO_DISTRIBUTED=1` (TPU VMs, SLURM), JAX auto-detects the cluster.
    """
    coordinator = coordinator or os.environ.get(_ENV["coordinator"])
    num_processes = num_processes or int(os.environ.get(_ENV["num_processes"], "0") or 0)
    if process_id is None and os.environ.get(_ENV["process_id"]):
        process_id = int(os.environ[_ENV["process_id"]])
    if jax.distributed.is_initialized():
        return
    if coordinator is None and not num_processes:
        if os.environ.get("MOTIONAURA_AUTO_DISTRIBUTED") == "1":
            jax.distributed.initialize(initialization_timeout=timeout_s)
        return
    if num_processes <= 1:
        return
    if coordinator is None or process_id is None:
        raise ValueError(
            "multi-process run needs --coordinator=HOST:PORT, --num_processes and --process_id "
            f"(or {', '.join(_ENV.values())})"
        )
    if jax.config.jax_platforms in (None, "", "cpu") and local_device_count:
        jax.config.update("jax_num_cpu_devices", local_device_count)
    log.info("jax.distributed: process %d of %d, coordinator %s", process_id, num_processes, coordinator)
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
    )
