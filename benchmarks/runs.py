"""Shared by the quality benchmarks: build a run's config from a config argument and overrides, train it, and pull
out the headline figures (validation-chosen, so no number here was picked by looking at the test classes)."""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import math
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root, for configs

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
# The figures every quality benchmark reports, where a run has them.
HEADLINE = (
    "map@all[exact]",
    "prec@100[k]",
    "prec@10[k]",
    "prec@25[k]",
    "map@200[sake]",
    "acc@1",
    "acc@5",
    "acc@10",
)


def _value(text: str) -> Any:
    """An override's value: a Python literal when it parses as one (``3e-4``, ``(256,)``, ``False``), else text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def make_config(config_arg: str, overrides: list[str]) -> Any:
    """The config of ``configs/<method>.py:<args>`` with ``section.field=value`` overrides applied.

    Args:
      config_arg: ``"bda:dataset=sketchy,root=..."``: the config module's name, then its arguments after a colon.
      overrides: ``["train.lr=3e-4", "model.head_norm=True"]``.
    """
    name, _, arg = config_arg.partition(":")
    config = importlib.import_module(f"configs.{name}").get_config(arg or None)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"override {item!r}: expected section.field=value")
        *path, field = key.split(".")
        target = config
        for part in path:
            target = target[part]
        target[field] = _value(text)
    return config


def headline(report: dict[str, Any]) -> dict[str, float]:
    """The headline figures of a final report: float, ITQ and learned-code variants of ``HEADLINE``."""
    out = {}
    for key, value in report["metrics"].items():
        if key.rpartition("/")[2] in HEADLINE:
            out[key] = value
    selection = report.get("selection") or {}
    if selection.get("value") is not None:
        out[selection["metric"]] = selection["value"]
    out["selected_step"] = report["step"]
    if "fusion" in report:  # the frozen features' share of the ranking score, chosen on validation
        out["fusion_weight"] = report["fusion"]["weight"]
    out["train_s"] = report["timings"]["train_s"]
    if "features_s" in report["timings"]:  # a method that trains on features: their extraction or cache read
        out["features_s"] = report["timings"]["features_s"]
    if "load5" in report["timings"]:
        out["load5"] = report["timings"]["load5"]
    return out


def train(config: Any, workdir: str) -> dict[str, Any]:
    """Trains and evaluates ``config`` in ``workdir`` (evaluator tables go to stderr) and returns the report."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data
    from absl import logging

    from jsbir import train as trainer

    logging.set_verbosity(logging.WARNING)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        report = trainer.train_and_evaluate(config, workdir)
    report["timings"]["total_s"] = time.perf_counter() - start
    # The machine's 5-minute load average as the run ended: its own work gives about the number of cores it used,
    # more means other processes shared the CPU and the times above are longer than on a quiet machine.
    report["timings"]["load5"] = os.getloadavg()[1]
    return report


def mean_and_std(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per figure present in every run: mean, sample standard deviation (0 for one run), min and max."""
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    out = {}
    for key in keys:
        values = [float(r[key]) for r in runs]
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        out[key] = {"mean": mean, "std": math.sqrt(var), "min": min(values), "max": max(values)}
    return out


def seeds_result(settings: dict[str, Any], runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A ``seeds`` result: the settings, each run's figures (with its ``seed``) and their mean and spread."""
    return {
        "benchmark": "seeds",
        **extra,
        "settings": settings,
        "seeds": [r["seed"] for r in runs],
        "summary": mean_and_std([{k: v for k, v in r.items() if k != "seed"} for r in runs]),
        "runs": runs,
    }


def select_metric(config: Any) -> str:
    """The validation metric that chooses a run's checkpoint: the config's, else its method's protocol's."""
    from jsbir.eval.protocols import get_protocol
    from jsbir.methods import get_method

    protocol = get_protocol(get_method(config.method).evaluation(config).protocol)
    return config.train.select_metric or protocol.select_metric


def describe(config: Any) -> dict[str, Any]:
    """The settings a result depends on, for the JSON output."""
    backbone = config.features if "features" in config else config.model  # a feature method's extractor
    return {
        "method": config.method,
        "dataset": config.data.name,
        "split": config.data.split,
        "classes": config.data.get("classes", ""),
        "root": config.data.root,
        "image_size": config.data.image_size,
        "backbone": backbone.backbone,
        "pretrained": backbone.pretrained,
        "freeze": config.train.freeze,
        "steps": config.train.steps,
        "batch_size": config.train.batch_size,
        "lr": config.train.lr,
        "val_fraction": config.data.val_fraction,
        "select_metric": f"val/{select_metric(config)}",
        "semantics": config.data.semantics_setting,
        "fuse_frozen": config.eval.get("fuse_frozen", "off"),
    }


def emit(result: dict[str, Any], out: str = "") -> None:
    """Prints a benchmark's JSON result, and writes it to ``out`` too when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
