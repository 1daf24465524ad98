"""The one `motionaura` command.

Each sub-command lives in `motionaura_jax/commands/<name>.py` (dashes become underscores) and
exposes `main(argv: list[str]) -> int | None`. This file only finds it, so that importing the
CLI stays cheap and a sub-command's heavy imports happen only when it runs.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import pkgutil
import sys

import motionaura_jax.commands as _commands


def _summary(name: str) -> str:
    """First line of a sub-command's docstring, read without importing it (keeps `--help` instant)."""
    path = pathlib.Path(_commands.__path__[0]) / f"{name.replace('-', '_')}.py"
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def available_commands() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(_commands.__path__) if not m.name.startswith("_")]
    return sorted(n.replace("_", "-") for n in names)


def _usage() -> str:
    lines = ["usage: motionaura COMMAND [ARGS ...]", "", "commands:"]
    for name in available_commands():
        lines.append(f"  {name:<12} {_summary(name)}")
    return "\n".join(lines)


def _started_as_command() -> bool:
    """This process is the `motionaura` command (the console script or `python -m motionaura_jax.cli`), not a
    program that called `main()`: only then may it restart itself."""
    return pathlib.Path(sys.argv[0]).name in ("motionaura", "cli.py") if sys.argv else False


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None and _started_as_command()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in available_commands():
        import difflib

        close = difflib.get_close_matches(name, available_commands(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        print(f"motionaura: unknown command {name!r}.{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    from motionaura_jax import host_memory

    try:
        if from_command_line:  # glibc reads its tunables at exec: start again under them, same PID
            host_memory.reexec_with_policy()
        else:
            host_memory.choose()  # in process (tests, notebooks): only the check of the variable
    except ValueError as error:
        print(f"motionaura: {error}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"motionaura_jax.commands.{name.replace('-', '_')}")
    from motionaura_jax.atomic import DiskFullError

    try:
        rc = module.main(rest)
    except DiskFullError as error:  # any command, any file: one line, what was there before intact
        print(f"motionaura {name}: {error.strerror}", file=sys.stderr)
        return 1
    except Exception as error:
        if not _is_input_error(error):
            raise
        # A wrong input that a command did not catch itself: still one line naming it, exit 2.
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        label = (
            f"{name} {rest[0]}" if name in ("eval", "data") and rest and not rest[0].startswith("-") else name
        )
        print(f"motionaura {label}: {message}", file=sys.stderr)
        return 2
    return int(rc or 0)


# The errors that mean "an input (a path, a config, a flag) is wrong", each with a one-line message naming it.
# Looked up by module so that the CLI imports none of them (the command already did, if it can raise one).
_INPUT_ERRORS = (
    ("motionaura_jax.config", "ConfigError"),
    ("motionaura_jax.paths", "WorkdirError"),
    ("motionaura_jax.paths", "InputFileError"),
    ("motionaura_jax.runs", "RunError"),
    ("motionaura_jax.eval.t2v", "EvalInputError"),
    ("motionaura_jax.pipelines.inpaint", "InpaintInputError"),
    ("motionaura_jax.models.text.loading", "ModelFolderError"),
)


def _is_input_error(error: Exception) -> bool:
    classes = [getattr(sys.modules[m], c) for m, c in _INPUT_ERRORS if m in sys.modules]
    return isinstance(error, tuple(classes))


if __name__ == "__main__":
    sys.exit(main())
