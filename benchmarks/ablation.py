"""Ablations: a method trained with each loss term switched off in turn, and each boolean model switch flipped;
the change of the validation and test figures against the full model; JSON out.

The variants come from the config itself, so a new method gets its table with no edit here: every
``config.loss.w_*`` weight above 0 is set to 0 in turn, and every ``config.model`` switch that is on is turned off
(``head_norm``, ``distill``, ...). Every run is reported at the checkpoint its validation split chose::

    python benchmarks/ablation.py --config bda --set train.steps=500
    python benchmarks/ablation.py --config "bda:dataset=sketchy,split=eccv21,root=../shared/data/sketchy_mini,\
backbone=efficientnet_lite0,size=128,preset=sketchy_mini" --out benchmarks/results/bda_ablation.json

``--only w_adv,head_norm`` runs a subset (the full model always runs first).
"""

from __future__ import annotations

import argparse
import os
import tempfile

from runs import describe, emit, headline, make_config, train


def variants(config) -> dict[str, list[str]]:
    """Variant name -> overrides: each positive loss weight zeroed, each model switch that is on turned off."""
    out = {}
    for key, value in config.loss.items():
        if key.startswith("w_") and isinstance(value, float | int) and value > 0:
            out[f"no {key[2:]}"] = [f"loss.{key}=0.0"]
    for key, value in config.model.items():
        if value is True:
            out[f"{key}=False"] = [f"model.{key}=False"]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="bda", help="config module and arguments, e.g. bda:runlocal")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    parser.add_argument("--only", default="", help="comma-separated variant names (see the JSON); default: all")
    parser.add_argument("--seed", type=int, default=0, help="the seed of every run")
    parser.add_argument("--workdir", default="", help="folder for the runs; default: a new /tmp folder")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    root = args.workdir or tempfile.mkdtemp(prefix="jsbir-ablation-", dir="/tmp")
    full = make_config(args.config, args.set)
    chosen = variants(full)
    if args.only:
        wanted = [v.strip() for v in args.only.split(",")]
        unknown = sorted(set(wanted) - set(chosen))
        if unknown:
            raise SystemExit(f"--only: unknown variants {unknown}; known: {sorted(chosen)}")
        chosen = {k: chosen[k] for k in wanted}
    results = {}
    for i, (name, overrides) in enumerate({"full": [], **chosen}.items()):
        config = make_config(args.config, [*args.set, *overrides])
        config.seed = args.seed
        results[name] = {"overrides": overrides, **headline(train(config, os.path.join(root, f"v{i}")))}
    base = results["full"]
    for row in results.values():
        row["delta"] = {k: row[k] - base[k] for k in base if "@" in k and k in row}
    result = {
        "benchmark": "ablation",
        "config": args.config,
        "overrides": args.set,
        "settings": describe(full),
        "seed": args.seed,
        "variants": results,
        "workdir": root,
    }
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
