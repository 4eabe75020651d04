"""Search speed on a real index, one sketch at a time (the page's case): every exact backend and FAISS's own
search over a trained run's indexed gallery, and the HTTP round trip of the page; prints one JSON object.

Build the index first (a run's test gallery, embedded by its model)::

    python -m jsbir.main index --workdir RUN --split test --out INDEX
    python benchmarks/search_real.py --index INDEX --out benchmarks/results/search_real.json

The queries are the protocol's test sketches of the index's run, embedded by its model. For each representation the
index holds (float embeddings, ITQ codes, the method's own codes), each round searches one sketch's embedding or
packed code with every backend in turn (``faiss_plain``: FAISS's own search of the ``faiss`` backend's index, no
tie handling); per backend the median and 90th percentile ms per search. The page's round trip: a PNG sketch posted
to ``/api/search`` through Starlette's test client (decode, resize, embed, rank, JSON; no network), beside the
model's embedding alone. The 1-minute load average is recorded before and after, and the figures are marked not
publishable above 0.75 per core.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from search import PlainFaiss  # noqa: E402  (the sibling benchmark's plain-FAISS reference)

from jsbir import retrieval  # noqa: E402
from jsbir.retrieval import backends, faiss_search  # noqa: E402


def _stats(times: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(times)
    return {"median_ms": float(statistics.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "calls": len(ms)}


def bench_backends(index, queries: np.ndarray, k: int) -> list[dict]:
    """Batch-1 search times of every exact backend and plain FAISS, per representation the index holds."""
    rows = []
    for representation in retrieval.REPRESENTATIONS:
        try:
            searchers = {name: retrieval.get_searcher(index, name, representation) for name in backends.EXACT_BACKENDS}
        except ValueError:  # codes the index does not hold
            continue
        coded = queries if representation == "float" else searchers["faiss"].query_codes(queries)
        calls = {name: s.backend for name, s in searchers.items()} | {
            "faiss_plain": PlainFaiss(searchers["faiss"].backend)
        }
        times = {name: [] for name in calls}
        for i in range(len(coded)):
            one = coded[i : i + 1]
            for name, backend in calls.items():
                backend.search(one, k)  # warm (the first round also compiles the jax search)
                begin = time.perf_counter()
                backend.search(one, k)
                times[name].append(time.perf_counter() - begin)
        for name, t in times.items():
            rows.append({"representation": representation, "backend": name, **_stats(t)})
    return rows


def bench_page(index_dir: str, sketches: np.ndarray, k: int, backend: str) -> dict:
    """The HTTP round trip of one sketch through the page's app, and the model's embedding of it alone."""
    from starlette.testclient import TestClient

    from jsbir.serve.app import create_app
    from jsbir.serve.engine import load_engine, resize

    engine = load_engine(index_dir, backend)
    client = TestClient(create_app(engine), base_url="http://127.0.0.1")
    bodies = []
    for sketch in sketches:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(sketch, np.uint8)).save(buffer, "PNG")
        bodies.append(buffer.getvalue())
    round_trip, embed = [], []
    for body, sketch in zip(bodies, sketches, strict=True):
        begin = time.perf_counter()
        response = client.post(f"/api/search?k={k}", content=body, headers={"content-type": "image/png"})
        round_trip.append(time.perf_counter() - begin)
        if response.status_code != 200:
            raise RuntimeError(f"/api/search answered {response.status_code}: {response.text}")
        begin = time.perf_counter()
        engine.embed(resize(np.asarray(sketch, np.uint8), engine.image_size))
        embed.append(time.perf_counter() - begin)
    return {"backend": backend, "round_trip": _stats(round_trip), "embed_only": _stats(embed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="an index folder written by python -m jsbir.main index")
    parser.add_argument("--queries", type=int, default=50, help="test sketches searched, one at a time")
    parser.add_argument("--k", type=int, default=24, help="results per search (the page's default)")
    parser.add_argument("--page-backend", default="faiss", help="the backend the page's engine uses")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args()
    cores = faiss_search.cores()
    before = os.getloadavg()[0]
    index = retrieval.open_index(args.index)
    encoder = retrieval.load_encoder(index)
    encoder.config.eval.batch_size = encoder.mesh.size
    sketches = np.asarray(encoder.evaluator.protocol.sets(encoder.data).queries.image[: args.queries])
    queries = np.concatenate([encoder.embed(s[None], "sketch") for s in sketches]).astype(np.float32)
    result = {
        "benchmark": "search_real",
        "index": {"items": len(index), "dim": index.dim, "source": index.manifest["source"],
                  "model": {key: index.manifest["model"].get(key) for key in ("method", "workdir")}},
        "settings": {"queries": len(queries), "k": args.k, "batch": 1},
        "cores": cores,
        "backends": bench_backends(index, queries, args.k),
        "page": bench_page(args.index, sketches, args.k, args.page_backend),
    }  # fmt: skip
    after = os.getloadavg()[0]
    result |= {"load_1m_before": before, "load_1m_after": after, "publishable": max(before, after) <= 0.75 * cores}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
