"""Peak host memory and time of an evaluation scored in blocks of queries, at QuickDraw-Extended's zero-shot test
size by default (92,291 sketch queries x 54,151 photos of 30 unseen classes); prints one JSON object.

The embeddings are random: ``--dim``-d unit vectors drawn around one centre per class (so the metrics are
neither 0 nor 1), for the queries and the gallery. Two representations are evaluated as the evaluator does, each
with every metric of the ``zero_shot`` protocol (``Protocol.metrics_blocked``, ``config.eval.query_block`` rows at
a time): ``float``, the dot product of the embeddings, and ``itq<bits>``, ITQ codes fitted on the gallery, ranked
by Hamming distance. The whole score matrix would take ``queries x gallery x 4`` bytes (``whole_matrix_gb``); the
peak resident set size of this process (``resource.getrusage``, ``ru_maxrss``) is read after the data are made and
after each representation. ``--fraction`` scales both sets (the time grows with queries x gallery x log(gallery);
the JSON's ``extrapolated_full_s`` scales it up, labelled as such). ``--check`` (small sizes only) compares every
metric with the whole-matrix path on the same scores (identical, or it fails), and gives the largest difference
from the metrics of one product of all queries at once, whose float32 dot products BLAS sums in another order
(with it, the peaks include the check's whole matrices)::

    python benchmarks/eval_blocks.py --out benchmarks/results/eval_blocks.json
    python benchmarks/eval_blocks.py --fraction 0.1 --check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import common  # noqa: E402
from jsbir import metrics  # noqa: E402
from jsbir.data.types import Images  # noqa: E402
from jsbir.eval.protocols import EvalSets, get_protocol  # noqa: E402

QUERIES, GALLERY, CLASSES = 92_291, 54_151, 30  # QuickDraw-Extended, zero-shot test (unseen classes)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (ru_maxrss is in kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def make_sets(queries: int, gallery: int, classes: int, dim: int, seed: int) -> tuple[EvalSets, np.ndarray, np.ndarray]:
    """Class-clustered unit embeddings of the queries and the gallery, and their EvalSets (1-pixel images)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, count).astype(np.int32)
        x = centres[labels] + 2.5 * rng.standard_normal((count, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True), labels

    (q, q_labels), (g, g_labels) = draw(queries), draw(gallery)

    def images(labels: np.ndarray) -> Images:
        return Images(np.zeros((len(labels), 1, 1, 1), np.uint8), labels, -np.ones(len(labels), np.int64))

    return EvalSets(images(q_labels), images(g_labels), None), q, g


def evaluate(name: str, score_rows, sets: EvalSets, config, check: bool) -> dict:
    """Every zero-shot metric, blocked; its time, the peak RSS after it, and optionally the whole-matrix check."""
    protocol = get_protocol("zero_shot")
    start = time.perf_counter()
    values = protocol.metrics_blocked(score_rows, sets, config)
    out = {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mb_after": peak_rss_mb()}
    out["map@all[exact]"], out["prec@200[k]"] = values["map@all[exact]"], values["prec@200[k]"]
    if check:
        # The whole matrix made of the same block scores: the metrics must be identical.
        block, total = config.query_block, len(sets.queries)
        whole = np.concatenate([score_rows(slice(i, i + block)) for i in range(0, total, block)])
        out["equals_whole_matrix"] = protocol.metrics(whole, sets, config) == values
        if not out["equals_whole_matrix"]:
            raise AssertionError(f"{name}: blocked metrics differ from the whole matrix's")
        # One product of all queries: float32 dot products summed in another order by BLAS, a last-bit change.
        one = protocol.metrics(score_rows(slice(None)), sets, config)
        out["max_abs_diff_vs_one_product"] = max(abs(one[k] - values[k]) for k in one)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="scale of both sets against the full size")
    parser.add_argument("--classes", type=int, default=CLASSES)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--query-block", type=int, default=common.eval_config().query_block)
    parser.add_argument("--check", action="store_true", help="also compare with the whole-matrix metrics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="write the JSON here too")
    args = parser.parse_args()
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")

    queries, gallery = round(QUERIES * args.fraction), round(GALLERY * args.fraction)
    config = common.eval_config()
    config.query_block = args.query_block
    rss_start = peak_rss_mb()
    sets, q, g = make_sets(queries, gallery, args.classes, args.dim, args.seed)
    result = {
        "benchmark": "eval_blocks",
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "queries": queries,
            "gallery": gallery,
            "ks": list(config.ks),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_before": round(os.getloadavg()[0], 1),
        },
        "whole_matrix_gb": round(queries * gallery * 4 / 1e9, 2),
        "block_matrix_mb": round(min(args.query_block, queries) * gallery * 4 / 1e6, 1),
        "peak_rss_mb": {"after_imports": rss_start, "after_data": peak_rss_mb()},
    }

    def dot(rows: slice) -> np.ndarray:
        return q[rows] @ g.T

    start = time.perf_counter()
    q_codes, g_codes = metrics.itq_codes(q, g, args.bits, seed=args.seed)
    packed_q, packed_g = metrics.pack_codes(q_codes), metrics.pack_codes(g_codes)
    result["itq_fit_s"] = round(time.perf_counter() - start, 1)

    def hamming(rows: slice) -> np.ndarray:
        return metrics.hamming_scores(packed_q[rows], packed_g, args.bits)

    result["float"] = evaluate("float", dot, sets, config, args.check)
    result[f"itq{args.bits}"] = evaluate(f"itq{args.bits}", hamming, sets, config, args.check)
    result["peak_rss_mb"]["total"] = peak_rss_mb()
    total = result["float"]["seconds"] + result[f"itq{args.bits}"]["seconds"]
    result["total_s"] = round(total, 1)
    result["machine"]["load_after"] = round(os.getloadavg()[0], 1)
    if args.fraction < 1:
        # Sorting dominates: time ~ queries x gallery x log(gallery).
        scale = (QUERIES * GALLERY * math.log(GALLERY)) / (queries * gallery * math.log(gallery))
        result["extrapolated_full_s"] = {"note": "extrapolated, not measured", "seconds": round(total * scale)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
