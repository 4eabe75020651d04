"""A method on Sketchy-mini (ECCV 2018 split, 21 unseen classes) from ImageNet EfficientNet-Lite0; prints JSON.

Trains ``configs/<method>.py:dataset=sketchy,split=eccv21,root=<root>,backbone=efficientnet_lite0,size=128``
(plus ``preset=sketchy_mini`` for BDA-SketRet) on the seen classes, evaluates the untrained and the trained model
on the 21 unseen classes (525 sketch queries against 525 photos) and prints one JSON object: the exact mAP@all,
Prec@10/25/100 (``[k]``: relevant in the top K / K; each class has 25 photos, so Prec@100 is at most 0.25), the same
for ITQ codes and the method's own codes when it learns them, chance mAP, the untrained model's mAP, the training
time and the settings::

    python benchmarks/sketchy_mini.py                                  # the full recipe, workdir under /tmp
    python benchmarks/sketchy_mini.py --method crossatnet              # float, learned-code and ITQ figures
    python benchmarks/sketchy_mini.py --steps 50 --no-untrained --set loss.w_adv=0.05 --workdir /tmp/try

The data folder is read in place (``--root``, default ``../shared/data/sketchy_mini`` from the project root); the
tensorflow-datasets copy at 128 px goes to ``--data-dir`` (default: tfds' own folder) and is built once. The
training time counts the optimisation steps only (not data preparation, compilation of the evaluation, or the
evaluations). ``--keep-freed-memory`` (on by default) applies ``benchmarks/train_step.py``'s glibc setting.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root, for configs

from absl import logging  # noqa: E402

from jsbir.methods import available_methods  # noqa: E402


def _value(text: str):
    """A ``--set`` value: a Python literal when it parses as one (``3e-4``, ``(256,)``, ``False``), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def make_config(args: argparse.Namespace):
    """The run's config: the method's recipe, then ``--steps`` and every ``--set`` override."""
    arg = f"dataset=sketchy,split={args.split},root={args.root},backbone=efficientnet_lite0,size={args.size}"
    if args.method == "bda":
        arg += ",preset=sketchy_mini"
    config = importlib.import_module(f"configs.{args.method}").get_config(arg)
    config.data.data_dir = args.data_dir
    config.eval.eval_untrained = not args.no_untrained
    if args.steps:
        config.train.steps = args.steps
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected section.field=value")
        node, *path = key.split(".")
        target = config
        for part in [node, *path[:-1]]:
            target = target[part]
        target[path[-1] if path else node] = _value(text)
    return config


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="bda", choices=available_methods(), help="the method to train")
    parser.add_argument("--root", default=os.path.join(ROOT, "sketchy_mini"), help="the Sketchy-mini folder")
    parser.add_argument("--split", default="eccv21", help="unseen classes (eccv21: the 21 of ECCV 2018)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--workdir", default="", help="run folder (must be new or empty); default: a /tmp folder")
    parser.add_argument("--data-dir", default="", help="tensorflow-datasets folder; default: tfds' own")
    parser.add_argument("--steps", type=int, default=0, help="training steps (0: the preset's)")
    parser.add_argument("--no-untrained", action="store_true", help="skip the evaluation before training")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)

    root = os.path.abspath(os.path.expanduser(args.root))
    if not os.path.isdir(os.path.join(root, "photo")) or not os.path.isdir(os.path.join(root, "sketch")):
        raise SystemExit(
            f"no Sketchy-mini at {root} (it needs photo/<class>/ and sketch/<class>/ folders): this benchmark reads "
            "the team's shared data (../shared/data/sketchy_mini beside the project); pass --root to point at a copy"
        )
    args.root = root
    workdir = args.workdir or tempfile.mkdtemp(prefix="bda-sketchy-mini-", dir="/tmp")
    if os.path.isdir(workdir) and os.listdir(workdir):
        raise SystemExit(f"--workdir {workdir} is not empty: a benchmark starts from step 0; choose a new folder")
    config = make_config(args)

    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data
    import jax

    from jsbir import train

    kept = False
    if args.keep_freed_memory:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from train_step import keep_freed_memory

        kept = keep_freed_memory()
    logging.set_verbosity(logging.WARNING)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the evaluator's tables; stdout carries the JSON only
        report = train.train_and_evaluate(config, workdir)
    total = time.perf_counter() - start
    m = report["metrics"]
    result = {
        "method": args.method,
        "dataset": report["dataset"],
        "split": report["split"],
        "backbone": config.model.backbone,
        "pretrained": config.model.pretrained,
        "image_size": config.data.image_size,
        "frozen": config.train.freeze,
        "map@all[exact]": m["map@all[exact]"],
        "prec@100[k]": m["prec@100[k]"],
        "prec@10[k]": m["prec@10[k]"],
        "prec@25[k]": m["prec@25[k]"],
        "map@all[chance]": m["map@all[chance]"],
        **{k: v for k, v in m.items() if k.startswith(("itq", "hash")) and k.endswith(("all[exact]", "prec@100[k]"))},
        "representations": report["representations"],
        "untrained_map@all[exact]": report.get("untrained", {}).get("map@all[exact]"),
        "train_s": round(report["timings"]["train_s"], 1),
        "total_s": round(total, 1),
        "steps": report["step"],
        "batch_size": config.train.batch_size,
        "num_queries": report["num_queries"],
        "num_gallery": report["num_gallery"],
        "num_unseen_classes": report["num_unseen_classes"],
        "overrides": args.set,
        "keep_freed_memory": kept,
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}, {os.cpu_count()} cores",
        "workdir": workdir,
        "note": "untrained = this model at step 0: ImageNet backbones under random heads. The backbones' pooled "
        "1280-d ImageNet features alone give map@all[exact] 0.160 on these 525 x 525 (../shared/data/README.md)",
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
