"""Search speed of every backend on the same synthetic gallery, interleaved; prints one JSON object.

For each gallery size: N unit-length 128-d float embeddings drawn around N / 100 cluster centres (real embeddings
cluster by class; on structureless Gaussian data any approximate index does badly), and their 64-bit codes (signs
of a random projection, packed). Queries are drawn the same way. Every exact backend (``numpy``, ``jax``, ``faiss``)
and the approximate ``faiss_ivf`` search the same arrays; each round times one call of every backend in turn, so
load from other processes hits all of them alike::

    python benchmarks/search.py --sizes 10000,100000,1000000 --out benchmarks/results/search.json

Per size, representation, query batch and backend: median, min and max seconds per call over ``--repeats`` calls
(after one warm-up call that also compiles the jax search), queries per second and latency per call at the median,
and bytes per gallery item the backend holds. The IVF index's recall@10 is measured against the exact ranking of
the same 1000 queries, and its speed-up against exact ``faiss``. ``numpy`` (the brute-force reference: a full sort
of each block) is timed only while queries x items stays within ``--numpy-max-work``.

Beside the backends, ``faiss_plain`` is FAISS's own ``search`` of the same index and queries for the same ``k``,
under the same FAISS settings as the ``faiss`` backend (BLAS path, every core) but with no tie handling: the true
best FAISS does, and ``tie_cost`` of the ``faiss`` rows is their time over it. The 1-minute load average is recorded
before and after each size; a size whose load exceeded ``--max-load`` (default 0.75 per core: 1.5 on 2 cores) at
either point is marked ``"publishable": false``, as other processes then take the cores the timed ones need.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import numpy as np

from jsbir.metrics import pack_codes
from jsbir.retrieval import backends, faiss_search


def make_data(n: int, queries: int, dim: int, bits: int, seed: int) -> dict[str, np.ndarray]:
    """Clustered unit vectors (gallery and queries) and their packed sign codes."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), dim)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), count)] + 0.7 * rng.standard_normal((count, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    gallery, query = draw(n), draw(queries)
    projection = rng.standard_normal((dim, bits)).astype(np.float32)
    codes = {"gallery_codes": pack_codes(gallery @ projection), "query_codes": pack_codes(query @ projection)}
    return {"gallery": gallery, "queries": query, **codes}


class PlainFaiss:
    """FAISS's own search of a ``faiss`` backend's index: no over-fetch, no re-sort, ties as FAISS leaves them."""

    def __init__(self, exact):
        self.index, self.bits = exact.index, exact.bits

    def search(self, queries: np.ndarray, k: int):
        return self.index.search(np.ascontiguousarray(queries, np.float32 if self.bits is None else np.uint8), k)


def _time(backend, queries: np.ndarray, k: int) -> float:
    begin = time.perf_counter()
    backend.search(queries, k)
    return time.perf_counter() - begin


def _bytes_per_item(name: str, backend, n: int) -> float:
    if name == "jax":
        return backend.gallery.nbytes / n
    if name in ("numpy", "faiss_plain"):
        return backend.gallery.nbytes / n if name == "numpy" else backend.index.code_size
    if name == "numpy":
        return backend.gallery.nbytes / n
    index = backend.index
    if name == "faiss_ivf":
        return index.code_size + 8  # each stored vector and its 64-bit id in the inverted lists
    return index.code_size


def bench_size(n: int, args: argparse.Namespace) -> dict:
    """Builds every backend over one gallery and times them; returns the rows of that size."""
    data = make_data(n, max(args.batches), args.dim, args.bits, args.seed)
    rows, recall = [], {}
    for representation, gallery, queries, bits in (
        ("float", data["gallery"], data["queries"], None),
        ("hamming", data["gallery_codes"], data["query_codes"], args.bits),
    ):
        names = ["jax", "faiss", "faiss_plain", "numpy"] + (["faiss_ivf"] if bits is None else [])
        built, build_s = {}, {}
        for name in names:
            if name == "faiss_plain":
                built[name], build_s[name] = PlainFaiss(built["faiss"]), build_s["faiss"]
                continue
            begin = time.perf_counter()
            built[name] = backends.make_backend(
                name, gallery, bits, **({"nprobe": args.nprobe} if name == "faiss_ivf" else {})
            )
            build_s[name] = time.perf_counter() - begin
        if bits is None:
            exact = built["faiss"].search(queries, args.k)[1]
            approx = built["faiss_ivf"].search(queries, args.k)[1]
            hits = [len(set(a) & set(e)) / args.k for a, e in zip(approx, exact, strict=True)]
            recall = {"recall@10": float(np.mean(hits)), "nlist": built["faiss_ivf"].nlist, "nprobe": args.nprobe}
        for batch in args.batches:
            q = queries[:batch]
            timed = [m for m in names if m != "numpy" or batch * n <= args.numpy_max_work]
            for name in timed:
                built[name].search(q, args.k)  # warm-up (and the jax compilation)
            times = {name: [] for name in timed}
            for _ in range(args.repeats):
                for name in timed:
                    times[name].append(_time(built[name], q, args.k))
            for name in timed:
                median = statistics.median(times[name])
                row = {"items": n, "representation": representation, "batch": batch, "backend": name,
                       "median_s": median, "min_s": min(times[name]), "max_s": max(times[name]),
                       "qps": batch / median, "latency_ms": 1000 * median, "build_s": build_s[name],
                       "bytes_per_item": _bytes_per_item(name, built[name], n)}  # fmt: skip
                rows.append(row)
            exact_row = next(r for r in rows[-len(timed) :] if r["backend"] == "faiss")
            plain_row = next(r for r in rows[-len(timed) :] if r["backend"] == "faiss_plain")
            for row in rows[-len(timed) :]:
                row["speedup_vs_faiss"] = exact_row["median_s"] / row["median_s"]
                row["time_vs_faiss_plain"] = row["median_s"] / plain_row["median_s"]
            exact_row["tie_cost"] = exact_row["time_vs_faiss_plain"] - 1
        del built
    return {"items": n, "rows": rows, "approximate": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated gallery sizes")
    parser.add_argument("--batches", default="1,100,1000", help="comma-separated query batch sizes")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nprobe", type=int, default=16, help="IVF cells searched per query")
    parser.add_argument("--numpy-max-work", type=float, default=2e7, help="time numpy only up to queries x items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.0,
        help="1-minute load above which a size's figures are not publishable (default 0.75 per core)",
    )
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    cores = faiss_search.cores()
    args.max_load = args.max_load or 0.75 * cores
    sizes = [int(s) for s in args.sizes.split(",")]
    result = {
        "benchmark": "search",
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"sizes": sizes},
        "machine": {
            "cpus": os.cpu_count(),
            "cores": cores,
            "platform": platform.platform(),
            "jax": jax.__version__,
            "jax_devices": jax.device_count(),
        },  # fmt: skip
        "sizes": [],
    }
    for n in sizes:
        before = os.getloadavg()[0]
        size = bench_size(n, args)
        after = os.getloadavg()[0]
        size |= {"load_1m_before": before, "load_1m_after": after, "publishable": max(before, after) <= args.max_load}
        result["sizes"].append(size)
        if args.out:  # written after every size, so a long run keeps what it measured
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
