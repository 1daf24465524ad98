"""One home for defaults: every experiment builds (abstractly) from its stage's config, every `config.a.b` the
package reads is a key of some stage config, and no module outside motionaura_jax/configs/ repeats a default
as `cfg.get(key, default)`."""

import ast
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.configs import base, t2v, tiny, vae
from tests.conftest import REPO

PACKAGE = REPO / "motionaura_jax"
VAE_RUNS = (
    "tiny", "quickstart", "quickstart_fine", "quickstart_coarse", "quickstart_nomask", "shapes32", "shapes64", "S", "L"
)  # fmt: skip
T2V_RUNS = (
    "tiny",
    "tiny_mar",
    "quickstart",
    "quickstart_vlb",
    "quickstart_mar",
    "quickstart_filter3d",
    "quickstart_global_filter",
    "quickstart_fnet",
    "quickstart_qkv_fft2",
    "quickstart_fine",
    "quickstart_coarse",
    "shapes64",
)


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)


def _step_shapes(task, state_shapes, batch):
    """The train step under jax.eval_shape: it reads every loss/optimizer/model key, allocates nothing."""
    rng, step = jax.ShapeDtypeStruct((2,), jnp.uint32), jax.ShapeDtypeStruct((), jnp.int32)
    return jax.eval_shape(task.train_step, state_shapes, batch, rng, step)


def test_experiment_files_are_one_per_stage():
    """Runs that differ only in sizes are rows of one file per stage, named after the stage's task."""
    from motionaura_jax.train.tasks import TASKS

    stems = sorted(p.stem for p in (REPO / "experiments").glob("*.py") if not p.stem.startswith("_"))
    assert set(stems) <= set(TASKS), (
        f"experiments/ files {stems} should be named after a task in {sorted(TASKS)}"
    )
    for stem in stems:  # each stage file has a `tiny` row (tiny.py is the tiny task itself)
        spec = "experiments/tiny.py" if stem == "tiny" else f"experiments/{stem}.py:tiny"
        assert config_lib.load_experiment(spec).task == stem


@pytest.mark.parametrize("arg", VAE_RUNS)
def test_vae_experiment_builds_from_its_stage_config(arg):
    from motionaura_jax.train import vae as vae_train

    config = config_lib.load_config(f"experiments/vae.py:{arg}")
    assert config_lib.all_keys(config) == config_lib.all_keys(vae.get_config()), "experiments add no keys"
    task = vae_train.make_task(config, mesh=None)
    state = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    assert jax.tree.leaves(state)
    if arg == "tiny":  # the step and the data for the smallest size: one real batch, an abstract step
        it = task.make_data(0, 1)
        batch = _abstract(next(it))
        metrics = _step_shapes(task, state, batch)[1]
        assert "loss" in metrics and "gan_d" in metrics and "mfi_ce" in metrics


@pytest.mark.parametrize("arg", T2V_RUNS)
def test_t2v_experiment_builds_from_its_stage_config(arg):
    from motionaura_jax.train import t2v as t2v_train

    config = config_lib.load_config(f"experiments/t2v.py:{arg}")
    assert config_lib.all_keys(config) == config_lib.all_keys(t2v.get_config()), "experiments add no keys"
    # What the token cache fills in; with them set, make_task does not touch a tokenizer run.
    grid, text_len, text_dim, batch_size = (2, 4, 4), 16, 24, 2
    with config.unlocked():
        config.tokens.grid, config.tokens.text_len = grid, text_len
        config.model.vocab_size, config.model.text_dim = 32, text_dim
    task = t2v_train.make_task(config, mesh=None)
    state = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    batch = {
        "ids": jax.ShapeDtypeStruct((batch_size, *grid), jnp.int32),
        "text": jax.ShapeDtypeStruct((batch_size, text_len, text_dim), jnp.float32),
        "text_mask": jax.ShapeDtypeStruct((batch_size, text_len), jnp.bool_),
        "fps": jax.ShapeDtypeStruct((batch_size,), jnp.float32),
    }
    assert "loss" in _step_shapes(task, state, batch)[1]


def test_tiny_experiment_builds_from_its_stage_config():
    from motionaura_jax.train import tiny as tiny_train

    config = config_lib.load_config("experiments/tiny.py")
    assert config_lib.all_keys(config) == config_lib.all_keys(tiny.get_config())
    task = tiny_train.make_task(config, mesh=None)
    state = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    batch = _abstract(next(task.make_data(0, 1)))
    assert "loss" in _step_shapes(task, state, batch)[1]


def test_every_stage_has_the_loop_keys():
    loop_keys = set(config_lib.all_keys(base.get_config("x")))
    for config in (vae.get_config(), t2v.get_config(), tiny.get_config()):
        assert loop_keys <= set(config_lib.all_keys(config)), config.task


def test_configs_import_only_ml_collections():
    for path in sorted((PACKAGE / "configs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                ok = name in ("__future__", "typing", "collections.abc", "ml_collections")
                assert ok or name.startswith("motionaura_jax.configs"), f"{path.name} imports {name}"


# --- static checks over the package source -------------------------------------------------------------------

# Receivers that hold a config: `cfg`, `config`, `c`, `t`, `tcfg`, `data_cfg`, `self.config`, `config.train`...
CONFIG_NAME = re.compile(r"^(c|t|cfg|tcfg|config|\w+_cfg|\w+_config)$")
GROUPS = (
    "model",
    "data",
    "train",
    "mesh",
    "sharding",
    "loss",
    "disc",
    "eval",
    "diffusion",
    "tokens",
    "sample",
)


def _names(node: ast.AST) -> list[str]:
    """The identifiers of a receiver chain: `self.config.eval` -> [self, config, eval]; `c["x"]` -> [c]."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return _names(node.value) + [node.attr]
    if isinstance(node, ast.Subscript):
        return _names(node.value)
    return []


def default_reads(source: str) -> list[tuple[int, str]]:
    """(line, code) of every `cfg.get(key, default)`, `get = cfg.get` and `getattr(cfg, key, default)`."""
    found = []
    tree = ast.parse(source)
    call_of = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}  # func node -> its call
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "get":
            if not any(CONFIG_NAME.match(n) for n in _names(node.value)):
                continue
            call = call_of.get(id(node))
            if call is None:
                found.append((node.lineno, ast.unparse(node)))  # an alias: `get = cfg.get`
            elif len(call.args) >= 2 or any(k.arg == "default" for k in call.keywords):
                found.append((node.lineno, ast.unparse(call)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) == 3
            and any(CONFIG_NAME.match(n) for n in _names(node.args[0]))
        ):
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def _package_sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "configs" not in path.relative_to(PACKAGE).parts:
            yield path, path.read_text()


def test_the_default_scan_finds_defaults_and_nothing_else():
    bad = """
x = cfg.get("width", 32)
y = config.train.get("keep", 3)
z = self.config.get("dtype", "float32")
get = diffusion_cfg.get
w = getattr(c, "restart", True)
v = t.get("lr", default=1e-3)
"""
    assert [line for line, _ in default_reads(bad)] == [2, 3, 4, 5, 6, 7]
    fine = """
a = hf.get("layer_norm_eps", 1e-12)          # a Hugging Face config.json
b = variables.get("vq", {})                  # a Flax variable collection
c2 = (restored.data or {}).get("processes")  # an Orbax restore
d = mesh.shape.get(axis, 1)
e = config.get("task")                       # presence check of a loaded run, no default
f = cfg.width
"""
    assert default_reads(fine) == []


def test_no_module_outside_configs_repeats_a_default():
    found = [
        f"{path.relative_to(REPO)}:{line}: {code}"
        for path, source in _package_sources()
        for line, code in default_reads(source)
    ]
    assert not found, "defaults live in motionaura_jax/configs/ only; read cfg.key instead:\n" + "\n".join(
        found
    )


def test_every_config_key_the_package_reads_exists():
    """Each `config.GROUP.KEY` in the package is a key of some stage's config (a typo or a key without a
    default fails here, before any run)."""
    known = set()
    for config in (vae.get_config(), t2v.get_config(), tiny.get_config()):
        known |= set(config_lib.all_keys(config))
    missing = []
    for path, source in _package_sources():
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Attribute):
                continue
            names = _names(node)
            if len(names) >= 3 and names[0] == "config" and names[1] in GROUPS:
                # The longest prefix that is a config key or group: config.model.quantizer.num_codes.
                dotted = ".".join(names[1:])
                if not any(dotted == k or dotted.startswith(k + ".") for k in known):
                    if not hasattr(dict, names[2]) and names[2] not in (
                        "to_dict",
                        "to_json",
                        "unlocked",
                        "lock",
                    ):
                        missing.append(f"{path.relative_to(REPO)}:{node.lineno}: config.{dotted}")
    assert not sorted(set(missing)), "\n".join(sorted(set(missing)))
