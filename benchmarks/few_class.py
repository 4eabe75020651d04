"""Few training classes: a method on class subsets of a real set, against the frozen pretrained features; JSON out.

A user with a small collection of their own trains on a few classes. Each subset keeps ``--classes`` classes drawn
with ``random<N>_seed<S>`` (``config.data.classes``) and leaves ``--unseen`` of them unseen (``random<M>_seed<S>``),
one draw per seed of ``--subsets``; validation holds out 20% of the seen classes as usual, so 26 classes with 7
unseen train on 15. Every run reports, on the same unseen test images: the frozen backbone's own features
(``frozen/``), the trained model's learned score alone (``learned/``, when fused) and the reported model, whose
checkpoint and fusion weight validation chose::

    python benchmarks/few_class.py --config "zscmr:dataset=sketchy,root=../shared/data/sketchy_mini,size=128" \
        --subsets 0,1,2 --out benchmarks/results/zscmr_few_class.json

``--config`` and ``--set`` are as for ``seeds.py``; the training seed is the subset's seed.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from runs import describe, emit, make_config, mean_and_std, train

FIGURE = "map@all[exact]"


def subset_run(report: dict) -> dict:
    """One subset's figures: reported (validation-chosen), frozen, learned alone, and what validation chose."""
    values = report["metrics"]
    selection = report.get("selection") or {}
    return {
        "classes": report["num_unseen_classes"],
        "reported": values[FIGURE],
        "frozen": values.get(f"frozen/{FIGURE}"),
        "learned": values.get(f"learned/{FIGURE}", values[FIGURE]),
        "chance": values.get("map@all[chance]"),
        "fusion_weight": report.get("fusion", {}).get("weight", 0.0),
        "selected_step": report["step"],
        "validation": selection.get("value"),
        "train_s": report["timings"]["train_s"],
        "load5": report["timings"].get("load5"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config module and arguments, e.g. zscmr:dataset=sketchy,...")
    parser.add_argument("--classes", type=int, default=26, help="classes kept in each subset")
    parser.add_argument("--unseen", type=int, default=7, help="unseen classes of each subset")
    parser.add_argument("--subsets", default="0,1,2", help="comma-separated seeds of the subset draws")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    parser.add_argument("--workdir", default="", help="folder for the runs; default: a new /tmp folder")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args(argv)
    root = args.workdir or tempfile.mkdtemp(prefix="jsbir-few-class-", dir="/tmp")
    os.makedirs(root, exist_ok=True)
    runs, config = [], None
    for seed in (int(s) for s in args.subsets.split(",")):
        config = make_config(args.config, args.set)
        config.seed = seed
        config.data.classes = f"random{args.classes}_seed{seed}"
        config.data.split = f"random{args.unseen}_seed{seed}"
        report = train(config, os.path.join(root, f"subset{seed}"))
        runs.append({"subset_seed": seed, "subset": config.data.classes, "split": config.data.split,
                     **subset_run(report)})  # fmt: skip
    figures = [{k: v for k, v in r.items() if isinstance(v, float)} for r in runs]
    summary = mean_and_std(figures)
    margins = [r["reported"] - r["frozen"] for r in runs if r["frozen"] is not None]
    result = {
        "benchmark": "few_class",
        "config": args.config,
        "overrides": args.set,
        "settings": {
            **describe(config),
            "classes": f"random{args.classes}_seed<S>",
            "split": f"random{args.unseen}_seed<S>",
        },
        "figure": FIGURE,
        "subsets": [r["subset_seed"] for r in runs],
        "summary": summary,
        "reported_minus_frozen": {"mean": sum(margins) / len(margins), "min": min(margins)} if margins else None,
        "runs": runs,
        "workdir": root,
    }
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
