"""Diffusion re-ranking of trained runs, its neighbours k and spread alpha chosen on validation only; JSON out.

Each run (a folder of ``seeds.py``, say) is restored at the checkpoint its validation chose, as its report was.
Every (k, alpha) of the grid re-ranks the validation classes' scores; the pair with the best validation metric,
averaged over the runs, is the one the test figures are given for, next to the plain figures of the same
checkpoints. The output is a ``seeds`` result (its row in the README's table says "diffusion")::

    python benchmarks/seeds.py --config "bda:...,preset=sketchy_mini" --seeds 0,1,2 --workdir /tmp/bda
    python benchmarks/rerank.py --runs /tmp/bda/seed0,/tmp/bda/seed1,/tmp/bda/seed2 \
        --out benchmarks/results/bda_sketchy_mini_224_diffusion_seeds.json

``--graph imagenet`` (default) links the gallery photos by the pretrained backbone's pooled features,
``embedding`` by the model's own (``jsbir/eval/rerank.py``).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from runs import describe, emit, seeds_result

from jsbir import metrics
from jsbir.data.types import SbirData
from jsbir.eval import rerank
from jsbir.eval.evaluator import Evaluator
from jsbir.retrieval import encoder as encoder_lib


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def embedded(run: encoder_lib.Encoder, data: SbirData, split: str, graph: str, ks: list[int]) -> dict:
    """One split of a run: its evaluator, plain scores and the gallery's graph for each k of ``ks``."""
    evaluator = Evaluator(run.evaluator.method, run.model, data, run.config, run.mesh, split)
    variables = {"params": run.state.params, **run.state.model_state}
    q_views, _ = evaluator.encode(variables, evaluator.sets.queries, "sketch")
    g_views, _ = evaluator.encode(variables, evaluator.sets.gallery, "photo")
    features = rerank.graph_features(run.config, run.mesh, graph, evaluator.sets.gallery, g_views)
    return {
        "evaluator": evaluator,
        "scores": evaluator.view_scores(variables, q_views, g_views),
        "graphs": {k: metrics.knn_graph(features, k) for k in ks},
    }


def figures(part: dict, k: int | None, alpha: float, keys: tuple[str, ...] | None = None) -> dict[str, float]:
    """The protocol's metrics of a split's scores, re-ranked by (k, alpha) unless k is None."""
    evaluator, scores = part["evaluator"], part["scores"]
    if k is not None:
        scores = metrics.diffuse(scores, part["graphs"][k], alpha)
    values = evaluator.protocol.metrics(scores, evaluator.sets, evaluator.config.eval)
    return {key: v for key, v in values.items() if keys is None or key in keys}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="comma-separated run folders (trained, e.g. by seeds.py)")
    parser.add_argument("--k", default="5,10,15,20,30", help="neighbours per gallery item to try")
    parser.add_argument("--alpha", default="0.5,0.8,0.9,0.95", help="spreads to try, each in [0, 1)")
    parser.add_argument("--graph", default="imagenet", choices=("imagenet", "embedding"))
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args(argv)
    folders = args.runs.split(",")
    grid = [(int(k), a) for k in _floats(args.k) for a in _floats(args.alpha)]
    loaded, parts = [], []
    for folder in folders:
        run = encoder_lib.load_run(folder)
        loaded.append(run)
        data = encoder_lib.prepared_data(run.data, run.config, run.mesh)
        ks = sorted({k for k, _ in grid})
        parts.append({split: embedded(run, data, split, args.graph, ks) for split in ("validation", "test")})
    metric = parts[0]["validation"]["evaluator"].protocol.select_metric
    search = {}
    for k, alpha in grid:
        values = [figures(p["validation"], k, alpha, (metric,))[metric] for p in parts]
        search[f"k={k},alpha={alpha}"] = float(np.mean(values))
    plain = float(np.mean([figures(p["validation"], None, 0.0, (metric,))[metric] for p in parts]))
    best_k, best_alpha = max(grid, key=lambda ka: search[f"k={ka[0]},alpha={ka[1]}"])
    runs = []
    for folder, run, part in zip(folders, loaded, parts, strict=True):
        with open(os.path.join(folder, "report.json")) as f:
            report = json.load(f)
        row = {"seed": int(run.config.seed)}
        row.update({k: v for k, v in figures(part["test"], best_k, best_alpha).items() if "chance" not in k})
        row.update({f"plain/{k}": v for k, v in figures(part["test"], None, 0.0).items() if "chance" not in k})
        row[f"val/{metric}"] = figures(part["validation"], best_k, best_alpha, (metric,))[metric]
        row[f"plain/val/{metric}"] = figures(part["validation"], None, 0.0, (metric,))[metric]
        row["selected_step"] = run.checkpoint["step"]
        for key in ("train_s", "load5"):
            if key in report["timings"]:
                row[key] = report["timings"][key]
        runs.append(row)
    settings = describe(loaded[0].config)
    settings["rerank"] = f"diffusion, {args.graph} graph, k={best_k}, alpha={best_alpha} (chosen on validation)"
    chosen = {"metric": f"val/{metric}", "plain": plain, "grid": search, "chosen": [best_k, best_alpha]}
    result = seeds_result(settings, runs, rerank_search=chosen)
    result["workdirs"] = folders
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
