"""ZSCMR: each loss term by hand, the total as the weighted sum of its logged terms, the MST class graph of a
hand-built set of vectors, inductive semantics, and a short run on the embedded data whose loss falls and whose
zero-shot mAP beats chance."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import zscmr as zscmr_config
from jsbir import train
from jsbir.data import with_class_graph
from jsbir.data.types import DatasetInfo, SbirData
from jsbir.methods import zscmr

DIM, BATCH = 10, 8


def _info(setting: str = "inductive") -> DatasetInfo:
    # Five classes on a line at 0, 1, 3, 6, 10 plus one off it: the MST of the seen classes 0-3 is their chain.
    vectors = np.array([[0, 0], [1, 0], [3, 0], [6, 0], [10, 0], [0, 5]], np.float32)
    info = DatasetInfo(
        name="toy",
        split="toy",
        class_names=tuple("abcdef"),
        seen=(0, 1, 2, 3),
        unseen=(4, 5),
        semantics=vectors,
        image_size=0,
    )
    config = ml_collections.ConfigDict({"graph": "mst", "graph_k": 2, "semantics_setting": setting})
    return with_class_graph(SbirData(info, *[None] * 4), config).info


@pytest.fixture(scope="module")
def setup():
    config = zscmr_config.get_config("runlocal")
    model = zscmr.Model.from_config(config.model, _info())
    rng = np.random.default_rng(1)
    batch = {
        "sketch": jnp.asarray(rng.normal(size=(BATCH, DIM)), jnp.float32),
        "photo": jnp.asarray(rng.normal(size=(BATCH, DIM)), jnp.float32),
        "label": jnp.asarray([0, 0, 1, 1, 2, 2, 3, 1], jnp.int32),
    }
    variables = model.init(jax.random.key(0), batch)
    return config, model, variables, batch


def _edges(graph: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(graph)), strict=True)}


def test_mst_class_graph_joins_the_seen_classes_only():
    # Seen vectors at x = 0, 1, 3, 6: the minimum spanning tree is the chain; the unseen classes are isolated.
    assert _edges(_info().class_graph) == {(0, 1), (1, 2), (2, 3)}
    # Transductive: the unseen class at x = 10 hangs on 3 and the one at (0, 5) on 0 (|(0,5)-(0,0)| = 5 < 5.10).
    assert _edges(_info("transductive").class_graph) == {(0, 1), (1, 2), (2, 3), (3, 4), (0, 5)}


def test_unseen_vectors_never_reach_the_model_inductively():
    config = zscmr_config.get_config("runlocal")
    vectors = _info().semantics
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # unit_semantics is on
    inductive = zscmr.Model.from_config(config.model, _info())
    assert not inductive.semantics[4:].any()
    np.testing.assert_allclose(inductive.semantics[:4], unit[:4])
    transductive = zscmr.Model.from_config(config.model, _info("transductive"))
    np.testing.assert_allclose(transductive.semantics, unit)
    config.model.unit_semantics = False
    np.testing.assert_array_equal(zscmr.Model.from_config(config.model, _info("transductive")).semantics, vectors)


def test_semantic_and_reconstruction_losses_by_hand():
    z = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    s = jnp.array([[0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(zscmr.semantic_loss(z, s), (1.0 + 1.0) / 2)
    np.testing.assert_allclose(zscmr.reconstruction_loss(z, s), (1 + 0 + 0 + 1) / 4)


def test_classification_by_hand():
    # Logits (1, 2, 0) with the third class outside training: softmax over the first two, label 1:
    # -log(e^2 / (e^1 + e^2)) = log(1 + e^-1).
    got = zscmr.classification_loss(jnp.array([[1.0, 2.0, 0.0]]), jnp.array([1]), jnp.array([True, True, False]))
    np.testing.assert_allclose(got, np.log1p(np.exp(-1.0)), rtol=1e-6)


def test_triplet_both_forms_by_hand():
    # d(s0,p0) = 1, d(s0,p1) = 2, d(s1,p0) = sqrt 2, d(s1,p1) = 1 (Euclidean); labels 0, 1.
    sketch = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    photo = jnp.array([[0.0, 1.0], [2.0, 0.0]])
    labels = jnp.array([0, 1])
    per_sample = ml_collections.ConfigDict({"margin": 0.5, "mining": "all"})
    # Sketch anchors: max(0, .5 + 1 - 2) = 0 and max(0, .5 + 1 - sqrt 2); photo anchors: the same two, mirrored.
    # Each direction averages its two anchors and L_tri sums the directions: 1.5 - sqrt 2.
    got = zscmr.TRIPLETS["per_sample"](sketch, photo, labels, per_sample)
    np.testing.assert_allclose(got, 1.5 - np.sqrt(2), rtol=1e-6)
    # Batch mean, margin 1: 2 * max(0, mean(1, 1) - mean(2, sqrt 2) + 1) = 2 - sqrt 2.
    got = zscmr.TRIPLETS["batch_mean"](sketch, photo, labels, ml_collections.ConfigDict({"margin": 1.0}))
    np.testing.assert_allclose(got, 2 - np.sqrt(2), rtol=1e-6)


def test_centroid_topology_by_hand():
    # Class vectors (0,0), (1,0), (0,2); graph edges 0-1 and 0-2 (semantic lengths 1 and 2; the pair 1-2 is no
    # edge). Centroids: class 0 at (0,0) (two rows), class 1 at (2,0), class 2 at (0,2): edge lengths 2 and 2.
    # Each set divided by its mean over the edges: (1, 1) against (2/3, 4/3), so the loss is mean(1/9, 1/9).
    vectors = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    graph = jnp.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]], bool)
    z = jnp.array([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    labels = jnp.array([0, 0, 1, 2])
    related = jnp.ones(3, bool)
    np.testing.assert_allclose(zscmr.centroid_topology_loss(z, labels, vectors, graph, related), 1 / 9, rtol=1e-6)
    # A class absent from the batch takes no part: without class 2 only the edge 0-1 is left, and one edge
    # normalised by itself is 1 against 1.
    np.testing.assert_allclose(zscmr.centroid_topology_loss(z[:3], labels[:3], vectors, graph, related), 0.0)


def test_total_loss_is_the_weighted_sum_of_its_terms(setup):
    config, model, variables, batch = setup
    loss_config = ml_collections.ConfigDict(config.loss.to_dict())
    loss_config.w_sem, loss_config.w_tri, loss_config.w_rec, loss_config.w_cls, loss_config.w_topo = 0.3, 2, 5, 0.7, 3
    total, (_, m) = zscmr.loss_fn(model, variables["params"], {}, batch, jax.random.key(3), 0.0, loss_config)
    expected = 0.3 * m["loss_sem"] + 2 * m["loss_tri"] + 5 * m["loss_rec"] + 0.7 * m["loss_cls"] + 3 * m["loss_topo"]
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    assert all(float(v) > 0 for k, v in m.items() if k.startswith("loss_")), m
    with pytest.raises(ValueError, match=r"config.loss.triplet='nope' is not one of"):
        loss_config.triplet = "nope"
        zscmr.loss_fn(model, variables["params"], {}, batch, jax.random.key(3), 0.0, loss_config)


def test_classification_ignores_classes_outside_training(setup):
    config, model, variables, batch = setup
    loss_config = ml_collections.ConfigDict(config.loss.to_dict())
    params = jax.tree.map(lambda x: x, variables["params"])
    _, (_, before) = zscmr.loss_fn(model, params, {}, batch, jax.random.key(3), 0.0, loss_config)
    for head in ("sketch_classifier", "photo_classifier"):  # a huge bias on the unseen classes changes nothing
        params[head]["bias"] = params[head]["bias"].at[4:].set(1e6)
    _, (_, after) = zscmr.loss_fn(model, params, {}, batch, jax.random.key(3), 0.0, loss_config)
    np.testing.assert_allclose(after["loss_cls"], before["loss_cls"], rtol=1e-6)


def test_dropout_is_on_in_training_only(setup):
    config, model, variables, batch = setup
    a = zscmr.embed(model, variables, batch["sketch"], "sketch")
    b = zscmr.embed(model, variables, batch["sketch"], "sketch")
    np.testing.assert_array_equal(a, b)
    trained = [
        model.apply(variables, batch["sketch"], "sketch", True, method=zscmr.Model.encode, rngs={"dropout": k})
        for k in jax.random.split(jax.random.key(0), 2)
    ]
    assert not np.allclose(trained[0], trained[1])


def test_short_run_on_the_embedded_data_learns(tmp_path):
    config = zscmr_config.get_config("runlocal")
    config.unlock()
    config.data.data_dir = str(tmp_path / "tfds")
    config.train.steps = 150
    config.lock()
    report = train.train_and_evaluate(config, str(tmp_path / "run"))
    with open(os.path.join(tmp_path / "run", "metrics.jsonl")) as f:
        losses = [r["loss"] for r in map(json.loads, f) if "loss" in r]
    assert np.mean(losses[-10:]) < 0.95 * np.mean(losses[:10]), (losses[:10], losses[-10:])
    metrics = report["metrics"]
    assert metrics["map@all[exact]"] > 1.3 * metrics["map@all[chance]"], metrics  # 0.296 against 0.176
    assert report["features"]["dim"] == 1280 and report["features"]["from_cache"] == []
    assert report["timings"]["features_s"] > 0
