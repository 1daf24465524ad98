"""Mesh construction and logical sharding rules."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from motionaura_jax.parallel import mesh as mesh_lib
from motionaura_jax.parallel import sharding as sharding_lib


def test_mesh_fill_and_errors():
    assert mesh_lib.resolve_mesh_shape({"data": -1, "fsdp": 4}, 8) == (2, 4, 1, 1)
    assert mesh_lib.resolve_mesh_shape({"data": 2, "tensor": -1}, 8) == (2, 1, 4, 1)
    with pytest.raises(mesh_lib.MeshError, match="uses 6 devices but 8"):
        mesh_lib.resolve_mesh_shape({"data": 3, "fsdp": 2}, 8)
    with pytest.raises(mesh_lib.MeshError, match="do not divide"):
        mesh_lib.resolve_mesh_shape({"data": -1, "fsdp": 3}, 8)
    with pytest.raises(mesh_lib.MeshError, match="only one"):
        mesh_lib.resolve_mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(mesh_lib.MeshError, match="unknown mesh axes"):
        mesh_lib.resolve_mesh_shape({"model": 2}, 8)


def test_make_mesh_axes_and_subset():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1, "sequence": 1}
    single = mesh_lib.make_mesh({"data": -1, "num_devices": 1})
    assert single.size == 1


def test_conflicting_rules_raise():
    with pytest.raises(sharding_lib.ShardingRuleError, match="embed"):
        sharding_lib.validate_rules([("embed", "fsdp"), ("embed", "tensor")])
    # The same rule twice is not a conflict.
    sharding_lib.validate_rules([("embed", "fsdp"), ("embed", "fsdp")])


def test_logical_to_spec_rules_divisibility_and_reuse():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    spec = sharding_lib.logical_to_spec(("embed", "mlp"), (8, 8), mesh)
    assert spec == P("fsdp", "tensor")
    # 3 is not divisible by fsdp=2: replicated rather than an illegal sharding.
    assert sharding_lib.logical_to_spec(("embed", "mlp"), (3, 8), mesh) == P(None, "tensor")
    # batch -> (data, fsdp); a second dim asking for fsdp again is replicated.
    assert sharding_lib.logical_to_spec(("act_batch", "embed"), (8, 8), mesh) == P(("data", "fsdp"))
    with pytest.raises(sharding_lib.ShardingRuleError, match="no sharding rule"):
        sharding_lib.logical_to_spec(("nonsense",), (8,), mesh)


def test_constrain_is_noop_without_mesh_and_shards_with_one():
    x = jnp.ones((8, 4))
    assert sharding_lib.constrain(x, ("act_batch", None)) is x
    mesh = mesh_lib.make_mesh({"data": 8})
    with sharding_lib.use_mesh(mesh):
        y = jax.jit(lambda a: sharding_lib.constrain(a * 2, ("act_batch", None)))(x)
    assert y.sharding.spec == P("data")


def test_config_rules_override_defaults():
    import ml_collections

    config = ml_collections.ConfigDict({"sharding": {"rules": (("mlp", "fsdp"),)}})
    table = sharding_lib.validate_rules(sharding_lib.rules_from_config(config))
    assert table["mlp"] == ("fsdp",)
    assert table["embed"] == ("fsdp",)


def test_mesh_axes_for_follows_the_active_rules():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    assert sharding_lib.mesh_axes_for("act_batch", ("x",)) == ("x",)  # no mesh: the default
    with sharding_lib.use_mesh(
        mesh, sharding_lib.merge_rules(sharding_lib.DEFAULT_RULES, [("act_batch", "data")])
    ):
        assert sharding_lib.mesh_axes_for("act_batch") == ("data",)
