"""A method trained N times with different seeds: mean and standard deviation of every headline figure; JSON out.

Each run's reported model is the checkpoint its validation split chose (held-out seen classes); the seed changes
the initialisation and the data order (``config.seed``), not the data split (``config.data.data_seed``)::

    python benchmarks/seeds.py --config bda --seeds 0,1,2
    python benchmarks/seeds.py --config "bda:dataset=sketchy,split=eccv21,root=../shared/data/sketchy_mini,\
backbone=efficientnet_lite0,size=128,preset=sketchy_mini" --seeds 0,1,2 --out benchmarks/results/bda_sketchy_mini.json

``--config`` is ``<config module>[:<arguments>]`` as after ``configs/`` on the command line; ``--set
section.field=value`` overrides any field. Workdirs go under ``--workdir`` (default: a new /tmp folder).
"""

from __future__ import annotations

import argparse
import os
import tempfile

from runs import describe, emit, headline, make_config, seeds_result, train


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="bda", help="config module and arguments, e.g. bda:runlocal")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    parser.add_argument("--workdir", default="", help="folder for the runs; default: a new /tmp folder")
    parser.add_argument("--data-dir", default="", help="tensorflow-datasets folder; default: tfds' own")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    root = args.workdir or tempfile.mkdtemp(prefix="jsbir-seeds-", dir="/tmp")
    runs, config = [], None
    for seed in seeds:
        config = make_config(args.config, args.set)
        config.seed = seed
        if args.data_dir:
            config.data.data_dir = args.data_dir
        report = train(config, os.path.join(root, f"seed{seed}"))
        runs.append({"seed": seed, **headline(report)})
    result = seeds_result(describe(config), runs, config=args.config, overrides=args.set)
    result["workdir"] = root
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
