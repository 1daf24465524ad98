"""Evaluation outputs: `metrics.json` plus a markdown table beside it, both carrying the protocol.

A number without its protocol cannot be compared, so `write_report` refuses to write one without it.
Both files are written atomically (`motionaura_jax.atomic`: temp file + rename, or one object write at a URL).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
from typing import Any

from etils import epath

from motionaura_jax import atomic, paths


def _json_safe(value: Any) -> Any:
    """inf/nan are not JSON: write them as strings ("inf") so the file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return _json_safe(value.item())
    return value


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(_json_safe(value))
    return str(value)


def markdown_table(metrics: dict[str, Any], protocol: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, dict | list) and len(json.dumps(_json_safe(value))) > 200:
            continue  # long per-item lists stay in the JSON
        lines.append(f"| {key} | {_format(value)} |")
    lines += ["", "## Protocol", "", "| setting | value |", "|---|---|"]
    for key, value in _flatten(protocol).items():
        lines.append(f"| {key} | {_format(value).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def write_report(
    out_path: str | os.PathLike,
    metrics: dict[str, Any],
    protocol: dict[str, Any],
    *,
    title: str,
    details: dict[str, Any] | None = None,
) -> tuple[pathlib.Path | epath.Path, pathlib.Path | epath.Path]:
    """Writes `out_path` (JSON: metrics, protocol, details) and the same name with .md; returns both."""
    if not protocol:
        raise ValueError(
            "write_report: a metric needs its protocol (which data, sizes, settings); none given"
        )
    out_path = paths.as_path(out_path)  # a local file or a URL (gs://...)
    if out_path.suffix != ".json":
        raise ValueError(f"write_report: the metrics file should end in .json, got {out_path}")
    record = {
        **metrics,
        "protocol": protocol,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if details:
        record["details"] = details
    json_path = atomic.write_text(out_path, json.dumps(_json_safe(record), indent=2) + "\n")
    md_path = atomic.write_text(out_path.with_suffix(".md"), markdown_table(metrics, protocol, title))
    return json_path, md_path
