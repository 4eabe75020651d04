"""Rewrites the README's results tables from the JSON files the quality benchmarks wrote to ``benchmarks/results/``.

Every ``seeds`` file gives one row (mean +- standard deviation over its seeds of the validation-chosen models; a
``rerank.py`` file's row says "+ diffusion"; the frozen pretrained features' figure beside it, from its runs' own
reports or from the ``frozen.py`` file of the same config), in
the zero-shot table (mAP) or, for a fine-grained method's file (acc@K and no mAP), in the fine-grained one;
every ``ablation`` file gives one table (each variant's validation and test mAP and their change against the full
model); the ``few_class`` files give one table (frozen, learned and reported figures over class subsets). The tables
replace what stands between ``<!-- results:start -->`` and ``<!-- results:end -->`` in the
README, and each method's ablation tables also replace what stands between ``<!-- ablation:start -->`` and
``<!-- ablation:end -->`` in ``docs/methods/<method>.md``. The ``train_throughput`` and ``host_memory`` files give
the tables between ``<!-- scale:start -->`` and ``<!-- scale:end -->``::

    python benchmarks/results_table.py            # rewrite README.md
    python benchmarks/results_table.py --print    # only print the tables
"""

from __future__ import annotations

import argparse
import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
START, END = "<!-- results:start -->", "<!-- results:end -->"
SCALE_START, SCALE_END = "<!-- scale:start -->", "<!-- scale:end -->"
ABLATION_START, ABLATION_END = "<!-- ablation:start -->", "<!-- ablation:end -->"


def _pm(summary: dict, key: str, runs: int, digits: int = 3) -> str:
    if key not in summary:
        return "-"
    value = summary[key]
    if runs == 1 or "std" not in value:  # no spread to give (one run, or a figure that does not vary: frozen.py's)
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def _where(settings: dict) -> str:
    if settings["dataset"] == "synthetic":
        return f"synthetic, {settings['image_size']} px"
    name = os.path.basename(settings["root"].rstrip("/")) or settings["dataset"]
    return f"{name} ({settings['split']}), {settings['image_size']} px"


def _val_key(figures: dict) -> str:
    """The validation metric that chose the checkpoint: the one ``val/`` key a run's figures hold."""
    return next((k for k in figures if k.startswith("val/")), "val/-")


def _busy(summary: dict) -> str:
    """The highest 5-minute load average seen at the end of the runs, when recorded."""
    return f" ({summary['load5']['max']:.1f})" if "load5" in summary else ""


def _code_key(summary: dict, prefix: str, metric: str) -> str:
    """The summary key of ``metric`` over the codes whose key starts with ``prefix`` ("itq", "hash"), or ""."""
    return next((k for k in summary if k.startswith(prefix) and k.endswith(f"/{metric}")), "")


# Each table's figure columns: (header, the summary key of a result's summary); the first is the headline, in bold.
ZERO_SHOT_COLUMNS = (
    ("mAP@all", lambda summary: "map@all[exact]"),
    ("frozen features mAP@all", lambda summary: "frozen/map@all[exact]"),
    ("Prec@100", lambda summary: "prec@100[k]"),
    ("ITQ codes mAP@all", lambda summary: _code_key(summary, "itq", "map@all[exact]")),
    ("learned codes mAP@all", lambda summary: _code_key(summary, "hash", "map@all[exact]")),
)
FINE_GRAINED_COLUMNS = (
    ("acc@1", lambda summary: "acc@1"),
    ("frozen features acc@1", lambda summary: "frozen/acc@1"),
    ("acc@5", lambda summary: "acc@5"),
    ("acc@10", lambda summary: "acc@10"),
    ("ITQ codes acc@1", lambda summary: _code_key(summary, "itq", "acc@1")),
)


def seeds_table(results: list[dict], columns=ZERO_SHOT_COLUMNS) -> str:
    """One row per seeds result, with ``columns``' figures (the zero-shot ones by default)."""
    validation = "/".join(sorted({_val_key(r["summary"]) for r in results}))
    headers = [header for header, _ in columns]
    lines = [
        f"| method | data | backbone, steps | {' | '.join(headers)} | validation ({validation}) | training s (load) "
        "| seeds |",
        "|---" * (len(columns) + 6) + "|",
    ]
    for r in results:
        s, summary = r["settings"], r["summary"]
        runs = len(r["seeds"])
        figures = [_pm(summary, key(summary), runs) for _, key in columns]
        figures[0] = f"**{figures[0]}**"
        method = f"`{s['method']}`" + (" + diffusion" if s.get("rerank") else "")  # re-ranked: rerank.py
        if summary.get("fusion_weight", {}).get("max", 0) > 0:
            method += " + frozen fusion"  # ranked by the learned score fused with the frozen features
        lines.append(
            f"| {method} | {_where(s)} | {s['backbone']}, {s['steps']} | {' | '.join(figures)} | "
            f"{_pm(summary, _val_key(summary), runs)} | {summary['train_s']['mean']:.0f}{_busy(summary)} | "
            f"{len(r['seeds'])} |"
        )
    return "\n".join(lines)


def ablation_table(result: dict) -> str:
    """One table: each variant's validation and test mAP, and the change against the full model."""
    s = result["settings"]
    metric = _val_key(result["variants"]["full"])
    lines = [
        f"`{s['method']}` on {_where(s)}, {s['backbone']}, {s['steps']} steps, seed {result['seed']}:",
        "",
        f"| variant | {metric} | change | test mAP@all | change |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["variants"].items():
        delta = row["delta"]
        lines.append(
            f"| {name} | {row.get(metric, float('nan')):.3f} | {delta.get(metric, 0.0):+.3f} | "
            f"{row['map@all[exact]']:.3f} | {delta.get('map@all[exact]', 0.0):+.3f} |"
        )
    return "\n".join(lines)


def throughput_table(result: dict) -> str:
    """Training step and input pipeline of every method (``train_throughput.py``)."""
    lines = [
        "| method, size, batch | step (ms) | training samples/s | GFLOP a step | achieved GFLOP/s "
        "| pipeline samples/s (images/s) | pipeline / step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        piped = r.get("pipeline")
        if isinstance(piped, dict):
            pipe = f"{piped['samples_per_s']:,.0f} ({piped['images_per_s']:,.0f})"
            ratio = f"{piped['samples_per_s'] / r['samples_per_s']:,.0f}x"
        else:
            pipe, ratio = "cached features", "-"
        lines.append(
            f"| `{r['method']}` {r['image_size']} px, {r['batch']} | {r['step_ms']:,.0f} | {r['samples_per_s']:,.1f} "
            f"| {r['gflops_per_step']:,.1f} | {1000 * r['achieved_tflops']:,.1f} | {pipe} | {ratio} |"
        )
    load = result["load_average_1m_before_after"]
    lines.append(
        f"\n{result['device_kind']} ({result['backend']}, {result['devices']} device, {result['cpu_count']} cores), "
        f"load {load[0]:.1f} before and {load[1]:.1f} after."
    )
    return "\n".join(lines)


def memory_table(result: dict) -> str:
    """Peak host memory against the dataset's size (``host_memory.py``)."""
    s = result["settings"]
    lines = [
        f"| images ({s['size']} px) | pixels if loaded (MB) | prepare: peak RSS MB (s) | train {s['steps']} steps "
        "+ evaluation: peak RSS MB (s) | evaluate: peak RSS MB (s) | test queries x gallery | score matrix (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        cells = [f"{r[k]['peak_rss_mb']:,.0f} ({r[k]['seconds']:,.0f})" for k in ("prepare", "train", "evaluate")]
        lines.append(
            f"| {r['images']:,} | {r['pixels_mb_if_loaded']:,.0f} | {' | '.join(cells)} "
            f"| {r['test_sketches']:,} x {r['test_photos']:,} | {r['score_matrix_mb']:,.0f} |"
        )
    return "\n".join(lines)


def scale_tables(folder: str) -> str:
    """The throughput and host-memory tables of the result files in ``folder``."""
    loaded = _load(folder)
    parts = [throughput_table(r) for r in loaded if r.get("benchmark") == "train_throughput"]
    parts += [memory_table(r) for r in loaded if r.get("benchmark") == "host_memory"]
    return "\n\n".join(parts)


def _load(folder: str) -> list[dict]:
    return [json.load(open(path)) for path in sorted(glob.glob(os.path.join(folder, "*.json")))]


def with_frozen(seeds: list[dict], loaded: list[dict]) -> list[dict]:
    """``seeds`` results, each given the frozen baseline's test figures (``frozen/`` keys, no spread) of the
    ``frozen.py`` result made with the same config argument, where its own runs did not report them."""
    baselines = {r["config"]: r["test"] for r in loaded if r.get("benchmark") == "frozen"}
    out = []
    for r in seeds:
        found = baselines.get(r.get("config"), {})
        extra = {f"frozen/{k}": {"mean": v} for k, v in found.items() if f"frozen/{k}" not in r["summary"]}
        out.append({**r, "summary": {**r["summary"], **extra}})
    return out


def few_class_table(results: list[dict]) -> str:
    """One row per ``few_class.py`` result: frozen, learned and reported figures over the class subsets."""
    lines = [
        "| method | data, classes (unseen) | backbone, steps | frozen features | learned alone | reported "
        "| reported - frozen: mean (worst) | fusion weights | subsets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, summary, runs = r["settings"], r["summary"], r["runs"]
        cells = [_pm(summary, key, len(runs)) for key in ("frozen", "learned", "reported")]
        margin = r["reported_minus_frozen"]
        weights = ", ".join(f"{run['fusion_weight']:g}" for run in runs)
        data = f"{os.path.basename(s['root'].rstrip('/')) or s['dataset']}, {s['classes']} ({s['split']})"
        lines.append(
            f"| `{s['method']}` | {data}, {s['image_size']} px | {s['backbone']}, {s['steps']} | {cells[0]} | "
            f"{cells[1]} | **{cells[2]}** | {margin['mean']:+.3f} ({margin['min']:+.3f}) | {weights} | {len(runs)} |"
        )
    return "\n".join(lines)


def tables(folder: str) -> str:
    """Every table the result files in ``folder`` make, seeds first."""
    loaded = _load(folder)
    seeds = with_frozen([r for r in loaded if r.get("benchmark") == "seeds"], loaded)
    fine = [r for r in seeds if "map@all[exact]" not in r["summary"]]  # acc@K alone: a fine-grained method
    zero_shot = [r for r in seeds if r not in fine]
    parts = [seeds_table(zero_shot)] if zero_shot else []
    parts += [seeds_table(fine, FINE_GRAINED_COLUMNS)] if fine else []
    few = [r for r in loaded if r.get("benchmark") == "few_class"]
    parts += [few_class_table(few)] if few else []
    parts += [ablation_table(r) for r in loaded if r.get("benchmark") == "ablation"]
    return "\n\n".join(parts)


def _replace(path: str, start: str, end: str, text: str) -> None:
    content = open(path).read()
    if start not in content or end not in content:
        raise SystemExit(f"{path} has no {start} ... {end} section to rewrite")
    head, rest = content.split(start, 1)
    with open(path, "w") as f:
        f.write(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=os.path.join(HERE, "results"), help="folder of result JSON files")
    parser.add_argument("--readme", default=os.path.join(HERE, "..", "README.md"), help="the file to rewrite")
    parser.add_argument("--docs", default=os.path.join(HERE, "..", "docs", "methods"), help="method pages folder")
    parser.add_argument("--print", action="store_true", help="print the tables and write nothing")
    args = parser.parse_args(argv)
    text, scale = tables(args.results), scale_tables(args.results)
    if args.print:
        print(f"{text}\n\n{scale}")
        return
    _replace(args.readme, START, END, text)
    _replace(args.readme, SCALE_START, SCALE_END, scale)
    ablations = [r for r in _load(args.results) if r.get("benchmark") == "ablation"]
    for method in sorted({r["settings"]["method"] for r in ablations}):
        page = os.path.join(args.docs, f"{method}.md")
        mine = "\n\n".join(ablation_table(r) for r in ablations if r["settings"]["method"] == method)
        _replace(page, ABLATION_START, ABLATION_END, mine)


if __name__ == "__main__":
    main()
