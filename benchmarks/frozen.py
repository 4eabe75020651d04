"""The frozen baseline alone: a config's pretrained backbone, no training, on its test (and validation) sets; JSON out.

Every trained run reports its frozen baseline (``frozen/`` metrics); this gives the same figures for a config
without training one, e.g. for results measured before reports carried them. The same images, image size and
test-time views as a run of the config; nothing here trains or chooses anything::

    python benchmarks/frozen.py --config "bda:dataset=sketchy,split=eccv21,root=../shared/data/sketchy_mini,\
backbone=efficientnet_lite0,size=224,preset=sketchy_mini" --out benchmarks/results/frozen_sketchy_mini_224.json

``results_table.py`` puts a result's test figure in the "frozen features" column of every seeds row with the
same dataset, split, class subset, image size, backbone and views.
"""

from __future__ import annotations

import argparse

from runs import describe, emit, make_config


def frozen_metrics(config, split: str) -> dict[str, float]:
    """The frozen baseline's metrics of ``config`` on ``split`` ("test" or "validation")."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    from jsbir import sharding
    from jsbir.data import features, get_dataset, samplers
    from jsbir.eval import frozen, protocols
    from jsbir.methods import get_method

    method = get_method(config.method)
    mesh = sharding.make_mesh()
    data = get_dataset(config.data)
    inputs, spec = method.inputs(config), method.evaluation(config)
    if samplers.get_sampler(inputs.sampler).stored == "features":
        data, _ = features.with_features(data, config, mesh)
    protocol = protocols.get_protocol(spec.protocol)
    sets = (protocol.sets if split == "test" else protocol.validation_sets)(data)
    baseline = frozen.FrozenBaseline(config, mesh, inputs.preprocess, spec.views, split)
    values = protocol.metrics_blocked(baseline.score_rows(sets.queries, sets.gallery), sets, config.eval)
    return {k: v for k, v in values.items() if not k.endswith("[chance]")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config module and arguments, as for seeds.py")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args(argv)
    config = make_config(args.config, args.set)
    result = {
        "benchmark": "frozen",
        "config": args.config,
        "overrides": args.set,
        "settings": {**describe(config), "views": config.eval.views},
        "test": frozen_metrics(config, "test"),
        "validation": frozen_metrics(config, "validation"),
    }
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
