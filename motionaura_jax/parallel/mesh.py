"""The device mesh, built from the config's `mesh` group.

Axes are always `(data, fsdp, tensor, sequence)`. A size of -1 fills the devices left over; the product must
equal the number of devices used, otherwise the error says which sizes would fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor", "sequence")


class MeshError(ValueError):
    """A mesh shape that does not fit the devices."""


def resolve_mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """`{"data": -1, "fsdp": 4}` on 8 devices -> (2, 4, 1, 1)."""
    unknown = set(sizes) - set(MESH_AXES) - {"num_devices"}
    if unknown:
        raise MeshError(f"unknown mesh axes {sorted(unknown)}; the axes are {MESH_AXES}")
    shape = [int(sizes.get(axis, 1)) for axis in MESH_AXES]
    fill = [i for i, s in enumerate(shape) if s == -1]
    if len(fill) > 1:
        raise MeshError(f"only one mesh axis may be -1, got {dict(zip(MESH_AXES, shape, strict=True))}")
    if any(s == 0 or s < -1 for s in shape):
        raise MeshError(
            f"mesh axis sizes must be positive or -1, got {dict(zip(MESH_AXES, shape, strict=True))}"
        )
    known = math.prod(s for s in shape if s != -1)
    if fill:
        if num_devices % known:
            raise MeshError(
                f"mesh {dict(zip(MESH_AXES, shape, strict=True))}: the fixed axes ({known} devices) "
                f"do not divide the {num_devices} devices"
            )
        shape[fill[0]] = num_devices // known
    if math.prod(shape) != num_devices:
        raise MeshError(
            f"mesh {dict(zip(MESH_AXES, shape, strict=True))} uses {math.prod(shape)} devices but "
            f"{num_devices} are present; set one axis to -1 to fill, e.g. --config.mesh.data=-1"
        )
    return tuple(shape)


def make_mesh(
    mesh_config: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """Builds a mesh with explicit `AxisType.Auto` axes (classic sharding-propagation semantics).

        mesh = make_mesh({"data": -1, "fsdp": 4})   # (data, fsdp, tensor, sequence) over all devices

    `mesh_config.num_devices` (optional, -1 = all) restricts the mesh to the first N devices, which is how tests
    train "unsharded" on one device beside sharded runs in the same process.
    """
    mesh_config = dict(mesh_config or {"data": -1})
    num_devices = int(mesh_config.pop("num_devices", -1))
    if devices is None:
        devices = jax.devices()
        if num_devices != -1:
            if num_devices > len(devices):
                raise MeshError(f"mesh.num_devices={num_devices} but only {len(devices)} devices are present")
            devices = devices[:num_devices]
    shape = resolve_mesh_shape(mesh_config, len(devices))
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def describe(mesh: Mesh) -> str:
    return " ".join(f"{name}={size}" for name, size in mesh.shape.items())
