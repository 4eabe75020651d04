"""Retrieval end to end with a tiny trained run: indexing its test gallery and searching it with its unseen-class
sketches gives the evaluator's own mAP; the evaluate / index / search subcommands, and their refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import bda
from jsbir import retrieval, train
from jsbir.retrieval import backends, cli, results

SKETCHY_RUN = os.environ.get("JSBIR_SKETCHY_MINI_RUN", "")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step BDA run on the synthetic set (two test-time views), its report, and its test-set indexes."""
    tmp = tmp_path_factory.mktemp("retrieval")
    config = bda.get_config("runlocal")
    config.data.data_dir = str(tmp / "tfds")
    config.train.steps = config.train.eval_every = 4
    config.eval.views = 2
    report = train.train_and_evaluate(config, str(tmp / "run"))
    encoder = retrieval.load_run(str(tmp / "run"))
    gallery = retrieval.index_split(encoder, "test", str(tmp / "gallery"))
    queries = retrieval.index_split(encoder, "test", str(tmp / "queries"), modality="sketch")
    return tmp, report, encoder, gallery, queries


@pytest.mark.parametrize("backend", backends.EXACT_BACKENDS)
def test_searching_the_indexed_test_set_gives_the_evaluators_map(run, backend):
    _, report, encoder, gallery, queries = run
    assert encoder.checkpoint["subdir"] == "best" and encoder.checkpoint["step"] == report["step"] == 4
    assert gallery.dim == 2 * report["embedding_dim"] and len(gallery) == report["num_gallery"]
    ks = tuple(encoder.config.eval.ks)
    labels = queries.labels
    scores, ids = retrieval.get_searcher(gallery, backend).search(np.asarray(queries.embeddings), len(gallery))
    values = results.ranking_metrics(scores, ids, labels, gallery.labels, ks)
    for key in ("map@all[exact]", "map@all[stable]", "prec@100[k]", "map@200[sake]"):
        assert values[key] == pytest.approx(report["metrics"][key], abs=1e-6), key
    # ITQ fitted once, at indexing, on the gallery: the evaluator's ITQ codes, the evaluator's figure.
    scores, ids = retrieval.get_searcher(gallery, backend, "itq").search(np.asarray(queries.embeddings), len(gallery))
    itq = results.ranking_metrics(scores, ids, labels, gallery.labels, ks)
    assert itq["map@all[exact]"] == pytest.approx(report["metrics"]["itq64/map@all[exact]"], abs=1e-9)


def test_backends_agree_on_the_trained_embeddings(run):
    _, _, _, gallery, queries = run
    q = np.asarray(queries.embeddings)
    ranked = {name: retrieval.get_searcher(gallery, name).search(q, 10) for name in backends.EXACT_BACKENDS}
    for name in ("jax", "faiss"):
        np.testing.assert_allclose(ranked[name][0], ranked["numpy"][0], atol=1e-5)
        assert (ranked[name][1] == ranked["numpy"][1]).mean() >= 0.99  # float rounding may swap near-ties
    hamming = {name: retrieval.get_searcher(gallery, name, "itq").search(q, 10) for name in backends.EXACT_BACKENDS}
    for name in ("jax", "faiss"):
        np.testing.assert_array_equal(hamming[name][1], hamming["numpy"][1])


def _sketch_files(run, count: int) -> list[str]:
    tmp, _, _, _, queries = run
    folder = tmp / "sketches"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.open(queries.image_path(i)).resize((57, 41))  # any size: queries are resized
        paths.append(str(folder / f"s{i}.png"))
        image.save(paths[-1])
    return paths


def test_search_command_prints_writes_json_and_a_grid(run, capsys):
    tmp, report, encoder, gallery, _ = run
    sketches = _sketch_files(run, 3)
    out = tmp / "out.json"
    args = ["--index", str(tmp / "gallery"), "--sketch", *sketches, "--k", "5", "--json", str(out)]
    assert cli.main("search", [*args, "--grid", str(tmp / "grid.png"), "--backend", "jax"]) == 0
    printed = capsys.readouterr().out
    assert "s0.png" in printed and "rank" in printed
    document = json.loads(out.read_text())
    assert document["backend"] == "jax" and [len(q["results"]) for q in document["queries"]] == [5, 5, 5]
    images = retrieval.read_images(sketches, encoder.image_size)
    want = retrieval.get_searcher(gallery, "numpy").search(encoder.embed(images, "sketch"), 5)
    assert [[r["item"] for r in q["results"]] for q in document["queries"]] == want[1].tolist()
    assert document["queries"][0]["results"][0]["score"] == pytest.approx(float(want[0][0, 0]), abs=1e-5)
    picture = Image.open(tmp / "grid.png")
    assert picture.size == (6 * 104 + 8, 3 * 132)  # 3 rows: a query and its 5 results, 104 x 132 pixels each
    # Another index as queries, whole rankings: the evaluator's mAP is printed.
    assert cli.main("search", ["--index", str(tmp / "gallery"), "--query-index", str(tmp / "queries"),
                               "--k", "all"]) == 0  # fmt: skip
    assert f"mAP@all[exact] {report['metrics']['map@all[exact]']:.4f}" in capsys.readouterr().out


def test_evaluate_and_index_commands(run, capsys):
    tmp, report, _, _, _ = run
    out = tmp / "evaluation.json"
    assert cli.main("evaluate", ["--workdir", str(tmp / "run"), "--out", str(out)]) == 0
    evaluated = json.loads(out.read_text())
    assert evaluated["step"] == report["step"]
    assert evaluated["metrics"]["map@all[exact]"] == pytest.approx(report["metrics"]["map@all[exact]"], abs=1e-9)
    photos = tmp / "photos"
    shutil.copytree(tmp / "gallery" / "images", photos / "things")
    assert cli.main("index", ["--workdir", str(tmp / "run"), "--photos", str(photos), "--out", str(tmp / "p")]) == 0
    folder = retrieval.open_index(tmp / "p")
    np.testing.assert_allclose(folder.embeddings, run[3].embeddings, atol=1e-6)  # the same photos, from files
    assert folder.class_names == ["things"] and (folder.labels == 0).all()
    assert cli.main("index", ["--workdir", str(tmp / "run"), "--photos", str(photos), "--out", str(tmp / "p")]) == 2
    assert "already exists; choose another --out or pass --overwrite" in capsys.readouterr().err


def test_rerank_benchmark_and_evaluate_with_overrides_of_the_runs_config(run, capsys):
    tmp, report, _, _, _ = run
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import rerank

    result = rerank.main(["--runs", str(tmp / "run"), "--k", "2,3", "--alpha", "0.5,0.9", "--graph", "embedding"])
    search, row = result["rerank_search"], result["runs"][0]
    k, alpha = search["chosen"]
    assert search["grid"][f"k={k},alpha={alpha}"] == max(search["grid"].values())  # chosen on validation
    assert search["plain"] == pytest.approx(report["selection"]["value"], abs=1e-6)
    assert row["plain/map@all[exact]"] == pytest.approx(report["metrics"]["map@all[exact]"], abs=1e-6)
    assert result["settings"]["rerank"].startswith(f"diffusion, embedding graph, k={k}, alpha={alpha}")
    # The evaluate command re-ranks with the same settings given as overrides of the run's own config.
    out = tmp / "reranked.json"
    overrides = ["--config.eval.rerank=diffusion", "--config.eval.rerank_graph=embedding",
                 f"--config.eval.rerank_k={k}", f"--config.eval.rerank_alpha={alpha}"]  # fmt: skip
    assert cli.main("evaluate", ["--workdir", str(tmp / "run"), "--out", str(out), *overrides]) == 0
    evaluated = json.loads(out.read_text())
    assert evaluated["rerank"].startswith(f"diffusion over the gallery's mutual {k}-NN graph")
    assert evaluated["metrics"]["map@all[exact]"] == pytest.approx(row["map@all[exact]"], abs=1e-6)
    assert cli.main("evaluate", ["--workdir", str(tmp / "run"), "--config.eval.nothing=1"]) == 2
    assert "nothing" in capsys.readouterr().err


def test_refusals_name_the_cause(run, capsys, tmp_path):
    tmp, _, _, _, _ = run
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"GIF89a truncated")
    assert cli.main("search", ["--index", str(tmp / "gallery"), "--sketch", str(broken)]) == 2
    assert "broken.png is not a readable image" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert cli.main("search", ["--index", str(tmp / "gallery"), "--sketch", str(text)]) == 2
    assert "notes.txt is not a readable image" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main("index", ["--workdir", str(tmp / "run"), "--photos", str(tmp_path / "empty"),
                              "--out", str(tmp_path / "i")]) == 2  # fmt: skip
    assert "holds no image files" in capsys.readouterr().err and not (tmp_path / "i").exists()
    # An index whose checkpoint differs from the run's: refused, naming what differs.
    other = tmp_path / "other"
    shutil.copytree(tmp / "gallery", other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"]["checkpoint"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main("search", ["--index", str(other), "--sketch", *_sketch_files(run, 1)]) == 2
    assert "made by another model (checkpoint.sha256: " in capsys.readouterr().err
    assert cli.main("search", ["--index", str(tmp / "gallery"), "--query-index", str(other)]) == 2
    assert "made by another model (checkpoint.sha256: " in capsys.readouterr().err
    np.save(other / "embeddings.npy", np.zeros((3, 3), np.float32))
    assert cli.main("search", ["--index", str(other), "--query-index", str(tmp / "queries")]) == 2
    assert "embeddings.npy has changed since indexing" in capsys.readouterr().err


def test_main_dispatches_the_subcommands(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-m", "jsbir.main", "search", "--index", str(tmp_path / "none"),
                           "--sketch", "x.png"], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 2 and f"jsbir search: error: no index at {tmp_path / 'none'}" in done.stderr


@pytest.mark.skipif(not SKETCHY_RUN, reason="set JSBIR_SKETCHY_MINI_RUN to a run trained on Sketchy-mini "
                    "(../shared/data/sketchy_mini; README) to check its index against its report")  # fmt: skip
def test_sketchy_mini_index_gives_the_reports_map(tmp_path):
    report = json.loads(open(os.path.join(SKETCHY_RUN, "report.json")).read())
    encoder = retrieval.load_run(SKETCHY_RUN)
    gallery = retrieval.index_split(encoder, "test", str(tmp_path / "g"))
    queries = retrieval.index_split(encoder, "test", str(tmp_path / "q"), modality="sketch")
    scores, ids = retrieval.get_searcher(gallery).search(np.asarray(queries.embeddings), len(gallery))
    values = results.ranking_metrics(scores, ids, queries.labels, gallery.labels, tuple(encoder.config.eval.ks))
    assert values["map@all[exact]"] == pytest.approx(report["metrics"]["map@all[exact]"], abs=1e-5)


def _bomb(path) -> None:
    """A PNG of a few dozen bytes whose header declares 20,000 x 20,000 pixels (PIL refuses it at open)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_or_skipped(run, capsys, tmp_path):
    tmp, _, _, gallery, _ = run
    bomb = tmp_path / "photos" / "things" / "bomb.png"
    bomb.parent.mkdir(parents=True)
    _bomb(bomb)
    assert cli.main("search", ["--index", str(tmp / "gallery"), "--sketch", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jsbir search: error: {bomb} is too large to decode safely (Image size (400000000 pixels)")
    assert err.count("\n") == 1
    for i in range(3):
        shutil.copy(gallery.image_path(i), bomb.parent / f"p{i}.png")
    (bomb.parent / "p3.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    args = ["--workdir", str(tmp / "run"), "--photos", str(tmp_path / "photos"), "--out", str(tmp_path / "i")]
    assert cli.main("index", args) == 2
    assert f"jsbir index: error: {bomb} is too large to decode safely" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
    assert cli.main("index", [*args, "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    done = retrieval.open_index(tmp_path / "i")
    assert [os.path.basename(p) for p in done.paths] == ["p0.png", "p1.png", "p2.png"]
    np.testing.assert_allclose(done.embeddings, gallery.embeddings[:3], atol=1e-6)
    skipped = done.manifest["source"]["skipped"]
    assert [(os.path.basename(s["path"]), s["reason"].split(":")[0]) for s in skipped] == [
        ("bomb.png", "DecompressionBombError"), ("p3.png", "UnidentifiedImageError"),
    ]  # fmt: skip
    assert f"skipped {bomb}: DecompressionBombError" in printed and "p3.png: UnidentifiedImageError" in printed
