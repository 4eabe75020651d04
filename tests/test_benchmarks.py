"""The quality benchmarks' own logic: seed statistics, ablation variants taken from a config, and the README
tables regenerated from result files."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import ablation  # noqa: E402
import eval_blocks  # noqa: E402
import results_table  # noqa: E402
import runs  # noqa: E402


def test_mean_and_sample_std():
    out = runs.mean_and_std([{"a": 1.0, "b": 5.0}, {"a": 2.0}, {"a": 6.0}])
    assert set(out) == {"a"}  # only figures every run has
    assert out["a"]["mean"] == pytest.approx(3.0)
    assert out["a"]["std"] == pytest.approx(((4 + 1 + 9) / 2) ** 0.5)
    assert (out["a"]["min"], out["a"]["max"]) == (1.0, 6.0)


def test_ablation_variants_come_from_the_config():
    config = runs.make_config("bda:runlocal", ["model.head_norm=True"])
    variants = ablation.variants(config)
    assert variants["no adv"] == ["loss.w_adv=0.0"]
    assert {"no cls", "no ib", "no topo", "no tri"} <= set(variants)
    assert variants["head_norm=False"] == ["model.head_norm=False"]
    assert "no kd" not in variants and not any(v.startswith("shared_backbone") for v in variants)  # off already
    with pytest.raises(SystemExit, match="expected section.field=value"):
        runs.make_config("bda", ["lr=3"])


def test_readme_tables_are_regenerated_from_results(tmp_path):
    settings = {
        "method": "bda", "dataset": "synthetic", "split": "default", "root": "", "image_size": 64,
        "backbone": "compact_cnn", "steps": 500, "select_metric": "val/map@all[exact]",
    }  # fmt: skip
    summary = {
        "map@all[exact]": {"mean": 0.9, "std": 0.01},
        "acc@1": {"mean": 0.95, "std": 0.01},  # zero-shot reports hold acc@K too
        "prec@100[k]": {"mean": 0.39, "std": 0.002},
        "itq64/map@all[exact]": {"mean": 0.91, "std": 0.02},
        "val/map@all[exact]": {"mean": 0.55, "std": 0.03},
        "train_s": {"mean": 200.0, "std": 5.0},
    }
    (tmp_path / "a.json").write_text(
        json.dumps(
            {"benchmark": "seeds", "config": "bda", "settings": settings, "summary": summary, "seeds": [0, 1, 2]}
        )
    )
    # frozen.py's figure of the same config fills the frozen column of the runs that did not report it
    frozen = {"benchmark": "frozen", "config": "bda", "settings": settings, "test": {"map@all[exact]": 0.1234}}
    (tmp_path / "a0.json").write_text(json.dumps(frozen))
    few_runs = [{"fusion_weight": w} for w in (0.5, 0.0)]
    few_summary = {k: {"mean": m, "std": 0.01} for k, m in (("frozen", 0.3), ("learned", 0.25), ("reported", 0.33))}
    few = {"benchmark": "few_class", "settings": {**settings, "dataset": "sketchy", "root": "/d/sketchy_mini",
           "classes": "random26_seed<S>", "split": "random7_seed<S>"}, "summary": few_summary, "runs": few_runs,
           "reported_minus_frozen": {"mean": 0.03, "min": -0.004}}  # fmt: skip
    (tmp_path / "a3.json").write_text(json.dumps(few))
    fused = {**summary, "fusion_weight": {"mean": 0.3, "std": 0.1, "min": 0.0, "max": 0.5}}
    (tmp_path / "a4.json").write_text(
        json.dumps({"benchmark": "seeds", "settings": settings, "summary": fused, "seeds": [0, 1, 2]})
    )
    reranked = {**settings, "rerank": "diffusion, imagenet graph, k=20, alpha=0.9 (chosen on validation)"}
    (tmp_path / "a1.json").write_text(
        json.dumps({"benchmark": "seeds", "settings": reranked, "summary": summary, "seeds": [0, 1]})
    )
    fine = {
        "acc@1": {"mean": 0.38, "std": 0.02},
        "acc@5": {"mean": 0.65, "std": 0.01},
        "acc@10": {"mean": 0.8, "std": 0.01},
        "itq64/acc@1": {"mean": 0.25, "std": 0.0, "min": 0.25, "max": 0.25},
        "val/acc@1": {"mean": 0.38, "std": 0.01},
        "train_s": {"mean": 800.0, "std": 50.0},
    }
    fine_settings = {**settings, "method": "dssa", "dataset": "qmul_v1", "root": "/data/qmul_shoes_v1/",
                     "image_size": 256, "backbone": "efficientnet_lite0", "steps": 100}  # fmt: skip
    (tmp_path / "a2.json").write_text(
        json.dumps({"benchmark": "seeds", "settings": fine_settings, "summary": fine, "seeds": [0, 1, 2]})
    )
    variants = {
        "full": {"val/map@all[exact]": 0.5, "map@all[exact]": 0.8, "delta": {}},
        "no adv": {"val/map@all[exact]": 0.45, "map@all[exact]": 0.82, "delta": {"val/map@all[exact]": -0.05,
                   "map@all[exact]": 0.02}},
    }  # fmt: skip
    (tmp_path / "b.json").write_text(
        json.dumps({"benchmark": "ablation", "settings": settings, "seed": 0, "variants": variants})
    )
    step = {"method": "bda", "image_size": 64, "batch": 64, "step_ms": 500.0, "samples_per_s": 128.0,
            "gflops_per_step": 24.1, "achieved_tflops": 0.0482}  # fmt: skip
    throughput = {
        "benchmark": "train_throughput", "device_kind": "cpu", "backend": "cpu", "devices": 1, "cpu_count": 2,
        "load_average_1m_before_after": [1.0, 2.0],
        "results": [{**step, "pipeline": {"images_per_s": 1280.0, "samples_per_s": 640.0}},
                    {**step, "method": "zscmr", "pipeline": "trains on cached feature vectors"}],
    }  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(throughput))
    sizes = {"images": 5000, "pixels_mb_if_loaded": 234.4, "test_sketches": 600, "test_photos": 500,
             "score_matrix_mb": 1.1, **{k: {"peak_rss_mb": 900.4, "seconds": 61.2} for k in ("prepare", "train")},
             "evaluate": {"peak_rss_mb": 1200.6, "seconds": 30.0}}  # fmt: skip
    memory = {"benchmark": "host_memory", "settings": {"size": 128, "steps": 20}, "results": [sizes]}
    (tmp_path / "d.json").write_text(json.dumps(memory))
    readme = tmp_path / "README.md"
    readme.write_text(
        f"top\n{results_table.START}\nold\n{results_table.END}\n"
        f"{results_table.SCALE_START}\nold\n{results_table.SCALE_END}\nbottom\n"
    )
    page = tmp_path / "bda.md"
    page.write_text(f"# BDA\n{results_table.ABLATION_START}\n{results_table.ABLATION_END}\n")
    results_table.main(["--results", str(tmp_path), "--readme", str(readme), "--docs", str(tmp_path)])
    assert "| no adv | 0.450 | -0.050 | 0.820 | +0.020 |" in page.read_text()
    text = readme.read_text()
    assert text.startswith("top\n") and text.endswith("bottom\n") and "old" not in text
    row = "| `bda` | synthetic, 64 px | compact_cnn, 500 | **0.900 ± 0.010** | 0.123 | 0.390 ± 0.002 | 0.910 ± 0.020 |"
    assert row in text
    assert "| `bda` + diffusion | synthetic, 64 px | compact_cnn, 500 | **0.900 ± 0.010** | - |" in text
    assert "| `bda` + frozen fusion | synthetic, 64 px |" in text  # validation fused the frozen features in
    assert (
        "| `bda` | sketchy_mini, random26_seed<S> (random7_seed<S>), 64 px | compact_cnn, 500 | 0.300 ± 0.010 | "
        "0.250 ± 0.010 | **0.330 ± 0.010** | +0.030 (-0.004) | 0.5, 0 | 2 |"
    ) in text
    # A fine-grained method's seeds go to their own table, with acc@K.
    assert "| acc@1 | frozen features acc@1 | acc@5 | acc@10 | ITQ codes acc@1 | validation (val/acc@1) |" in text
    assert (
        "| `dssa` | qmul_shoes_v1 (default), 256 px | efficientnet_lite0, 100 | **0.380 ± 0.020** | - | "
        "0.650 ± 0.010 | 0.800 ± 0.010 | 0.250 ± 0.000 | 0.380 ± 0.010 | 800 | 3 |"  # seeds that agree: spread kept
    ) in text
    assert "dssa" not in text.split("| acc@1 |")[0]  # not a row of the zero-shot table
    assert "| no adv | 0.450 | -0.050 | 0.820 | +0.020 |" in text
    assert "| `bda` 64 px, 64 | 500 | 128.0 | 24.1 | 48.2 | 640 (1,280) | 5x |" in text  # pipeline 640 / step 128
    assert "| `zscmr` 64 px, 64 | 500 | 128.0 | 24.1 | 48.2 | cached features | - |" in text
    assert "| 5,000 | 234 | 900 (61) | 900 (61) | 1,201 (30) | 600 x 500 | 1 |" in text


def test_eval_blocks_benchmark_checks_the_blocked_metrics(monkeypatch, capsys):
    argv = ["eval_blocks.py", "--fraction", "0.001", "--query-block", "40", "--dim", "32", "--bits", "16", "--check"]
    monkeypatch.setattr(sys, "argv", argv)
    eval_blocks.main()
    result = json.loads(capsys.readouterr().out)
    assert (result["settings"]["queries"], result["settings"]["gallery"]) == (92, 54)  # 0.1% of 92,291 x 54,151
    assert result["block_matrix_mb"] == round(40 * 54 * 4 / 1e6, 1)
    for name in ("float", "itq16"):
        assert result[name]["equals_whole_matrix"] and result[name]["max_abs_diff_vs_one_product"] < 1e-6
        assert 0.05 < result[name]["map@all[exact]"] < 1  # class-clustered embeddings: above the chance level
    assert result["extrapolated_full_s"]["note"] == "extrapolated, not measured"
