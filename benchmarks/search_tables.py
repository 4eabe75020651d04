"""Rewrites the search-speed tables of ``docs/retrieval.md`` and the README from ``benchmarks/search.py``'s JSON.

Each ``search.py`` results file gives, per gallery size, one table of every backend's median time per call beside
the plain-FAISS reference row, headed by the load average the size was measured at and whether that load allowed
publishing it; a ``search_real.py`` file gives one table of batch-1 search on a real index and the page's round trip.
The tables replace what stands between ``<!-- search:start -->`` and ``<!-- search:end -->`` in ``docs/retrieval.md``;
the README's 1M summary (between ``<!-- search1m:start -->`` and ``<!-- search1m:end -->``) comes from the last
``search.py`` file's largest size::

    python benchmarks/search_tables.py benchmarks/results/search.json benchmarks/results/search_1m.json \
        benchmarks/results/search_real.json
    python benchmarks/search_tables.py --print benchmarks/results/search.json
"""

from __future__ import annotations

import argparse
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("<!-- search:start -->", "<!-- search:end -->")
README = ("<!-- search1m:start -->", "<!-- search1m:end -->")


def _load_line(size: dict, settings: dict, cores: int) -> str:
    limit = settings.get("max_load") or 0.75 * cores
    state = "publishable" if size["publishable"] else f"**not publishable: above the stated load {limit:g}**"
    before, after = size["load_1m_before"], size["load_1m_after"]
    return f"load average {before:.1f} before, {after:.1f} after, on {cores} cores ({state})"


def size_table(size: dict, settings: dict, cores: int) -> str:
    """One gallery size's markdown table."""
    ivf = size.get("approximate") or {}
    head = f"**{size['items']:,} items**, medians of {settings['repeats']} calls; {_load_line(size, settings, cores)}"
    if ivf:
        head += f". IVF: {ivf['nlist']} cells, {ivf['nprobe']} probed, recall@10 against exact {ivf['recall@10']:.3f}"
    columns = ("representation", "queries per call", "backend", "median ms per call", "queries/s", "bytes/item",
               "time / plain FAISS")  # fmt: skip
    lines = [head, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for r in size["rows"]:
        lines.append(f"| {r['representation']} | {r['batch']} | `{r['backend']}` | {r['latency_ms']:.1f} | "
                     f"{r['qps']:.0f} | {r['bytes_per_item']:.0f} | {r['time_vs_faiss_plain']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def real_table(result: dict) -> str:
    """``search_real.py``'s table: batch-1 search per representation and backend, then the page's round trip."""
    index, page, cores = result["index"], result["page"], result["cores"]
    state = "publishable" if result["publishable"] else "**not publishable: above the stated load**"
    head = (f"**A real index**: the {index['source']['set']} gallery of {index['source']['dataset']} "
            f"({index['items']} photos, {index['dim']}-d, embedded by a trained `{index['model']['method']}` run), "
            f"{result['settings']['queries']} test sketches one at a time, k = {result['settings']['k']}; load "
            f"average {result['load_1m_before']:.1f} before, {result['load_1m_after']:.1f} after, on {cores} cores "
            f"({state})")  # fmt: skip
    lines = [head, "", "| representation | backend | median ms per search | 90th percentile ms |", "|---|---|---|---|"]
    for r in result["backends"]:
        lines.append(f"| {r['representation']} | `{r['backend']}` | {r['median_ms']:.2f} | {r['p90_ms']:.2f} |")
    trip, embed = page["round_trip"], page["embed_only"]
    lines.append(f"| page: PNG sketch -> `/api/search` -> JSON (`{page['backend']}`) | HTTP round trip | "
                 f"{trip['median_ms']:.1f} | {trip['p90_ms']:.1f} |")  # fmt: skip
    lines.append(
        f"| page: the model embedding the sketch alone | - | {embed['median_ms']:.1f} | {embed['p90_ms']:.1f} |"
    )
    return "\n".join(lines)


def summary_1m(size: dict, settings: dict, cores: int) -> str:
    """The README's summary of one size: plain FAISS, the faiss and jax backends per representation and batch."""
    lines = [f"{size['items']:,} items, k = {settings['k']}; {_load_line(size, settings, cores)}:", "",
             "| representation | query batch | plain FAISS | `faiss` backend | `jax` backend | `jax` / plain FAISS |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    rows = {(r["representation"], r["batch"], r["backend"]): r for r in size["rows"]}
    for rep, batch, _ in [key for key in rows if key[2] == "faiss_plain"]:
        plain, ours, jx = (rows[(rep, batch, b)] for b in ("faiss_plain", "faiss", "jax"))
        lines.append(f"| {rep} | {batch} | {plain['latency_ms']:.1f} ms | {ours['latency_ms']:.1f} ms | "
                     f"{jx['latency_ms']:.1f} ms | {jx['time_vs_faiss_plain']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def _replace(path: str, markers: tuple[str, str], text: str) -> None:
    with open(path, encoding="utf-8") as f:
        content = f.read()
    start, end = content.find(markers[0]), content.find(markers[1])
    if start < 0 or end < start:
        raise ValueError(f"{path}: no {markers[0]} ... {markers[1]} section to rewrite")
    content = content[: start + len(markers[0])] + "\n" + text + "\n" + content[end:]
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="benchmarks/search.py JSON files")
    parser.add_argument("--print", action="store_true", help="only print the tables")
    args = parser.parse_args()
    tables, last = [], None
    for path in args.results:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        if result.get("benchmark") == "search_real":
            tables.append(real_table(result))
            continue
        cores = result["machine"].get("cores", result["machine"]["cpus"])
        for size in result["sizes"]:
            tables.append(size_table(size, result["settings"], cores))
            last = (size, result["settings"], cores)
    docs, readme = "\n\n".join(tables), summary_1m(*last)
    if args.print:
        print(docs + "\n\n" + readme)
        return
    _replace(os.path.join(ROOT, "docs", "retrieval.md"), DOCS, docs)
    _replace(os.path.join(ROOT, "README.md"), README, readme)


if __name__ == "__main__":
    main()
