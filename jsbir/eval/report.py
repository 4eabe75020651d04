"""The evaluation report: ``report.json`` written by process 0, and the table printed at the end of a run."""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from jsbir.writers import write_atomic


def write_report(report: dict[str, Any], workdir: str, name: str = "report.json") -> None:
    """Writes the report to ``workdir/name`` (process 0) and prints the main metrics as a table."""
    if jax.process_index() != 0:
        return
    write_atomic(os.path.join(workdir, name), json.dumps(report, indent=2, sort_keys=True))
    print(format_table(report))


def format_table(report: dict[str, Any]) -> str:
    """A printable table of a report's metrics, with the untrained model, the learned score alone (when fused with
    the frozen baseline) and the frozen baseline beside when present."""
    values = report["metrics"]
    columns = {"untrained": report.get("untrained", {})}
    for prefix in ("learned", "frozen"):
        columns[prefix] = {k[len(prefix) + 1 :]: v for k, v in values.items() if k.startswith(f"{prefix}/")}
    columns = {name: column for name, column in columns.items() if column}
    weight = report.get("fusion", {}).get("weight", 0)
    lines = [
        f"{report['method']} on {report['dataset']} (split {report['split']}, {report['protocol']} protocol, step "
        f"{report['step']}, {report['num_queries']} queries x {report['num_gallery']} gallery, "
        f"dim {report['embedding_dim']}, {report['views']} view(s))"
        + (f"; ranked by the learned score fused with the frozen baseline's at weight {weight:g}" if weight else ""),
        f"{'metric':<28}{'trained':>10}" + "".join(f"{name:>12}" for name in columns),
    ]
    for key, value in values.items():
        if key.startswith(("learned/", "frozen/")):
            continue
        lines.append(
            f"{key:<28}{value:>10.4f}"
            + "".join(f"{column[key]:>12.4f}" if key in column else " " * 12 for column in columns.values())
        )
    for name, code in report.get("representations", {}).items():
        lines.append(f"{name:<12} {code['description']}, {code['bytes_per_item']:g} bytes per gallery item")
    return "\n".join(lines)
