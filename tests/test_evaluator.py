"""The shared evaluator: protocols choose the sets, test-time views average scores, a learned score replaces the dot
product, and codes of both kinds are reported with their size; every number checked against a direct computation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from jsbir import metrics, sharding
from jsbir.data.types import DatasetInfo, Images, SbirData
from jsbir.eval.evaluator import Evaluator
from jsbir.eval.protocols import EvalSets, get_protocol
from jsbir.methods import api

SIZE = 8


class Toy(nn.Module):
    """A linear embedding of the flattened image."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(6)(x.reshape(x.shape[0], -1))


def _embed(model, variables, images, modality):
    del modality
    e = model.apply(variables, images)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)


def _score(model, variables, q, g):
    del model, variables
    return -jnp.sum((q[:, None, :] - g[None, :, :]) ** 2, axis=-1)


def _codes(model, variables, images, modality):
    return jnp.where(_embed(model, variables, images, modality) >= 0, 1.0, -1.0)


def _images(n, labels, ids, seed):
    rng = np.random.default_rng(seed)
    return Images(
        rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8), np.asarray(labels, np.int32), np.asarray(ids)
    )


def _data(generalized=False):
    info = DatasetInfo("toy", "toy", ("a", "b", "c"), (0,), (1, 2), np.eye(3, dtype=np.float32), SIZE, generalized)
    labels = np.array([0, 1, 2] * 4)
    sketches = _images(12, labels, np.arange(12), 0)
    rows = np.arange(12)
    photos = _images(12, labels, (3 - rows // 3) * 3 + rows % 3, 1)  # sketch i's photo is elsewhere, same class
    return SbirData(info, sketches, photos, sketches, photos)


def _config():
    config = ml_collections.ConfigDict({"method": "toy", "seed": 0})
    config.eval = common.eval_config()
    config.eval.batch_size = 8
    config.eval.hash_bits = 4
    return config


def test_zero_shot_and_fine_grained_sets():
    data = _data()
    sets = get_protocol("zero_shot").sets(data)
    assert set(sets.queries.label) == set(sets.gallery.label) == {1, 2} and len(sets.gallery) == 8
    assert sets.targets is not None
    np.testing.assert_array_equal(sets.gallery.instance_id[sets.targets], sets.queries.instance_id)
    assert len(get_protocol("zero_shot").sets(_data(generalized=True)).gallery) == 12
    fine = get_protocol("fine_grained").sets(data)
    assert len(fine.queries) == len(fine.gallery) == 12 and fine.instance_level
    np.testing.assert_array_equal(fine.relevant(np.array([0])), np.arange(12)[None] == fine.targets[0])
    broken = SbirData(
        data.info, data.train_sketches, data.train_photos, data.test_sketches, data.test_photos.select(np.arange(11))
    )
    with pytest.raises(ValueError, match=r"needs every sketch's own photo"):
        get_protocol("fine_grained").sets(broken)
    with pytest.raises(ValueError, match=r"unknown evaluation protocol 'instance'"):
        get_protocol("instance")


def test_fine_grained_ranks_the_own_photo_among_its_class_only():
    queries = _images(2, [0, 1], [7, 8], 0)
    gallery = _images(4, [0, 1, 0, 1], [5, 6, 7, 8], 1)
    sets = EvalSets(queries, gallery, np.array([2, 3]), instance_level=True)
    scores = np.array([[0.9, 0.95, 0.5, 0.1], [0.9, 0.2, 0.95, 0.3]])
    # Query 0: of its class only photo 0 (0.9) beats its own 0.5 (photo 1's 0.95 is another class): rank 2.
    # Query 1: its own 0.3 beats photo 1's 0.2 (photos 0, 2 are another class): rank 1.
    config = _config().eval
    values = get_protocol("fine_grained").metrics(scores, sets, config)
    assert values["acc@1"] == 0.5 and values["rank[mean]"] == 1.5
    config.instance_gallery = "all"  # both own photos rank third
    values = get_protocol("fine_grained").metrics(scores, sets, config)
    assert values["acc@1"] == 0.0 and values["rank[mean]"] == 3.0
    config.instance_gallery = "everything"
    with pytest.raises(ValueError, match=r"config.eval.instance_gallery='everything' is not one of"):
        get_protocol("fine_grained").metrics(scores, sets, config)


@pytest.mark.parametrize("protocol", ["zero_shot", "fine_grained"])
def test_views_and_learned_score_and_codes(protocol, tmp_path):
    model = Toy()
    method = api.Method(
        name="toy",
        Model=Toy,
        loss_fn=None,
        embed=_embed,
        codes=_codes,
        score=_score,
        evaluation=lambda config: api.EvalSpec(protocol=protocol, views=2, codes=True, code_bits=6),
    )
    variables = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    data = _data()
    config = _config()
    config.eval.query_block = 5  # the 12 (or 8) queries are scored in blocks of 5 rows at most
    evaluator = Evaluator(method, model, data, config, sharding.make_mesh())
    state = type("State", (), {"params": variables["params"], "model_state": {}, "step": jnp.int32(7)})()
    scored, similarity = [], evaluator.similarity
    evaluator.similarity = lambda v, q, g: scored.append(len(q)) or similarity(v, q, g)
    report = evaluator.run(state, str(tmp_path), tag="t")
    blocks = [min(5, len(evaluator.sets.queries) - start) for start in range(0, len(evaluator.sets.queries), 5)]
    assert scored == [n for n in blocks for _ in range(2)] + [8, 8]  # then the grid's 8 rows alone, both views

    sets = get_protocol(protocol).sets(data)

    def embed(images, mirror):
        x = images.image / 127.5 - 1.0
        return np.asarray(_embed(model, variables, jnp.asarray(x[:, :, ::-1] if mirror else x, jnp.float32), ""))

    scores = (
        sum(np.asarray(_score(None, None, embed(sets.queries, m), embed(sets.gallery, m))) for m in (False, True)) / 2
    )
    expected = get_protocol(protocol).metrics(scores, sets, _config().eval)
    for key, value in expected.items():
        assert report["metrics"][key] == pytest.approx(value, abs=1e-6), key
    q_codes, g_codes = (np.where(embed(s, False) >= 0, 1, -1) for s in (sets.queries, sets.gallery))
    hamming = metrics.hamming_scores(metrics.pack_codes(q_codes), metrics.pack_codes(g_codes), 6)
    learned = get_protocol(protocol).metrics(hamming, sets, _config().eval)
    assert report["metrics"]["hash6/acc@1"] == pytest.approx(learned["acc@1"])
    assert report["representations"]["hash6"]["bytes_per_item"] == 1  # 6 bits take one byte
    assert report["representations"]["itq4"]["bytes_per_item"] == 1
    assert report["representations"]["float"]["bytes_per_item"] == 24
    assert report["protocol"] == protocol and report["views"] == 2 and report["step"] == 7
    assert (tmp_path / "report.json").exists() and (tmp_path / "retrieval_grid.png").exists()


def test_non_finite_embeddings_are_refused(tmp_path):
    model = Toy()
    method = api.Method(name="toy", Model=Toy, loss_fn=None, embed=lambda m, v, x, mod: x.reshape(len(x), -1) * jnp.nan)
    variables = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    evaluator = Evaluator(method, model, _data(), _config(), sharding.make_mesh())
    state = type("State", (), {"params": variables["params"], "model_state": {}, "step": jnp.int32(0)})()
    with pytest.raises(FloatingPointError, match=r"sketch embeddings hold NaN"):
        evaluator.run(state, str(tmp_path), tag="t")


def _toy_method(score=None):
    return api.Method(
        name="toy",
        Model=Toy,
        loss_fn=None,
        embed=_embed,
        score=score,
        evaluation=lambda config: api.EvalSpec(protocol="zero_shot", views=1),
    )


def test_diffusion_rerank_is_applied_to_the_float_scores(tmp_path):
    model = Toy()
    variables = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    data = _data()
    config = _config()
    config.eval.update(rerank="diffusion", rerank_graph="embedding", rerank_k=2, rerank_alpha=0.8)
    evaluator = Evaluator(_toy_method(), model, data, config, sharding.make_mesh())
    state = type("State", (), {"params": variables["params"], "model_state": {}, "step": jnp.int32(3)})()
    report = evaluator.run(state, str(tmp_path), tag="t")

    sets = get_protocol("zero_shot").sets(data)
    q, g = (
        np.asarray(_embed(model, variables, jnp.asarray(s.image / 127.5 - 1.0, jnp.float32), ""))
        for s in (sets.queries, sets.gallery)
    )
    reranked = metrics.diffuse(q @ g.T, metrics.knn_graph(g, 2), alpha=0.8)
    expected = get_protocol("zero_shot").metrics(reranked, sets, config.eval)
    plain = get_protocol("zero_shot").metrics(q @ g.T, sets, config.eval)
    assert expected["map@all[exact]"] != pytest.approx(plain["map@all[exact]"])  # the re-ranking changes the figure
    for key, value in expected.items():
        assert report["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert report["rerank"].startswith("diffusion over the gallery's mutual 2-NN graph of the model's own")
    assert "re-ranked by diffusion" in report["representations"]["float"]["description"]


def test_rerank_settings_are_checked():
    model = Toy()
    mesh = sharding.make_mesh()
    for key, value, message in (
        ("rerank", "bogus", r"config.eval.rerank='bogus' is not one of"),
        ("rerank_graph", "clip", r"config.eval.rerank_graph='clip' is not one of"),
        ("rerank_k", 0, r"config.eval.rerank_k must be at least 1"),
        ("rerank_alpha", 1.0, r"config.eval.rerank_alpha must be in \[0, 1\)"),
    ):
        config = _config()
        config.eval.rerank = "diffusion"
        config.eval[key] = value
        with pytest.raises(ValueError, match=message):
            Evaluator(_toy_method(), model, _data(), config, mesh)
    config = _config()
    config.eval.update(rerank="diffusion", rerank_graph="embedding")
    with pytest.raises(ValueError, match=r"toy ranks by a learned score"):
        Evaluator(_toy_method(_score), model, _data(), config, mesh)
    config.eval.rerank_graph = "imagenet"
    config.model = ml_collections.ConfigDict({"backbone": "compact_cnn", "backbone_args": {}, "pretrained": ""})
    with pytest.raises(ValueError, match=r"config.model.pretrained is empty"):
        Evaluator(_toy_method(), model, _data(), config, mesh)


def test_imagenet_graph_links_photos_by_the_pretrained_backbone():
    from jsbir.eval.rerank import graph_features
    from jsbir.nn.efficientnet import EfficientNetLite
    from jsbir.weights.efficientnet import efficientnet_weights_path, load_efficientnet_lite

    config = _config()
    config.model = ml_collections.ConfigDict(
        {"backbone": "efficientnet_lite0", "backbone_args": {}, "pretrained": "imagenet"}
    )
    mesh = sharding.make_mesh()
    photos = _images(3, [0, 1, 2], np.arange(3), 5)
    photos = Images(np.repeat(np.repeat(photos.image, 4, axis=1), 4, axis=2), photos.label, photos.instance_id)
    variables = load_efficientnet_lite("lite0", efficientnet_weights_path("lite0"))
    pooled = EfficientNetLite(variant="lite0").apply(variables, jnp.asarray(photos.image / 127.5 - 1.0, jnp.float32))
    expected = np.asarray(pooled).mean(axis=(1, 2))
    np.testing.assert_allclose(graph_features(config, mesh, "imagenet", photos, []), expected, rtol=1e-4, atol=1e-5)
    vectors = Images(np.eye(3, dtype=np.float32), photos.label, photos.instance_id)  # pre-extracted features
    np.testing.assert_array_equal(graph_features(config, mesh, "imagenet", vectors, []), np.eye(3))
