"""Evaluation in blocks of queries: every metric of every protocol, scored a block of rows at a time, equals the
whole-matrix result exactly, on tied scores, tied Hamming codes, queries with no relevant item and averaged views."""

from __future__ import annotations

import numpy as np
import pytest

from configs import common
from jsbir import metrics
from jsbir.data.types import Images
from jsbir.eval.protocols import EvalSets, get_protocol


def _images(labels, ids):
    labels = np.asarray(labels, np.int32)
    return Images(np.zeros((len(labels), 2, 2, 3), np.uint8), labels, np.asarray(ids))


def _eval_config(**changes):
    config = common.eval_config()
    config.ks = (3, 10, 250)  # 250 > the gallery: clamped
    config.acc_ks = (1, 5)
    config.update(changes)
    return config


def _zero_shot(rng, queries=37, gallery=230, own=True):
    """Query classes 0-5, gallery classes 0-4 (class-5 queries have no relevant item); with ``own`` every query's
    own photo (same instance id) is in the gallery, and the classes agree with it."""
    gallery_labels = rng.integers(0, 5 if not own else 6, gallery)
    targets = rng.choice(gallery, queries, replace=False)
    query_labels = gallery_labels[targets] if own else rng.integers(0, 6, queries)
    ids = np.arange(gallery)
    sets = EvalSets(
        _images(query_labels, ids[targets] if own else -np.ones(queries)),
        _images(gallery_labels, ids),
        targets if own else None,
    )
    return sets


def _blocked_equals_whole(protocol, scores, sets, config, blocks=(1, 7, 64)):
    whole = get_protocol(protocol).metrics(scores, sets, config)
    asked = []

    def score_rows(rows):
        asked.append(rows.stop - rows.start)
        return scores[rows]

    for block in blocks:
        asked.clear()
        got = get_protocol(protocol).metrics_blocked(score_rows, sets, config, block=block)
        assert got == whole, block  # exactly: each query's values come from its own row alone
        expected = block or config.query_block
        assert max(asked) == min(expected, len(scores)) and sum(asked) == len(scores)
    return whole


def test_zero_shot_float_scores_with_ties_and_empty_queries():
    rng = np.random.default_rng(0)
    sets = _zero_shot(rng, own=False)
    scores = np.round(rng.random((37, 230)), 1).astype(np.float32)  # ten levels: many ties
    whole = _blocked_equals_whole("zero_shot", scores, sets, _eval_config())
    assert "acc@1" not in whole  # no own photos: no instance metrics
    # The class-5 queries have no relevant item: dropped by the NaN-means, counted 0 by map@all[exact].
    empty = sets.queries.label == 5
    assert 0 < empty.sum() < 37
    relevant = sets.relevant(np.arange(37))
    assert whole["map@all[exact]"] == pytest.approx(metrics.mean_average_precision(scores, relevant, "exact"))
    assert whole["map@all[voc,drop-empty]"] == pytest.approx(
        metrics.mean_average_precision(scores[~empty], relevant[~empty], "voc")
    )


def test_zero_shot_with_own_photos_gives_the_same_acc_and_ranks():
    rng = np.random.default_rng(1)
    sets = _zero_shot(rng)
    scores = rng.integers(-3, 4, (37, 230)).astype(np.float32)
    whole = _blocked_equals_whole("zero_shot", scores, sets, _eval_config(query_block=5), blocks=(None, 3))
    assert whole["acc@5"] == pytest.approx(metrics.accuracy_at_k(scores, sets.targets, 5))
    assert set(whole) >= {"acc@1", "rank[mean]", "rank[median]", "map@all[class-mean]", "prec@250[min]"}


@pytest.mark.parametrize("bits", [10, 64])
def test_hamming_codes_with_tied_distances(bits):
    rng = np.random.default_rng(bits)
    sets = _zero_shot(rng)
    codes = rng.integers(0, 2, (4, bits)) * 2 - 1  # four distinct codes: every distance is tied many times over
    q, g = codes[rng.integers(0, 4, 37)], codes[rng.integers(0, 4, 230)]
    packed_q, packed_g = metrics.pack_codes(q), metrics.pack_codes(g)
    scores = metrics.hamming_scores(packed_q, packed_g, bits)
    whole = get_protocol("zero_shot").metrics(scores, sets, _eval_config())
    for block in (1, 6):
        got = get_protocol("zero_shot").metrics_blocked(
            lambda rows: metrics.hamming_scores(packed_q[rows], packed_g, bits), sets, _eval_config(), block=block
        )
        assert got == whole


def test_averaged_views():
    rng = np.random.default_rng(2)
    sets = _zero_shot(rng)
    # Small-integer embeddings: every dot product is exact, so a block's scores are the whole matrix's rows.
    q_views = [rng.integers(-2, 3, (37, 8)).astype(np.float32) for _ in range(3)]
    g_views = [rng.integers(-2, 3, (230, 8)).astype(np.float32) for _ in range(3)]

    def score_rows(rows):
        return sum(q[rows] @ g.T for q, g in zip(q_views, g_views, strict=True)) / 3

    whole = get_protocol("zero_shot").metrics(score_rows(slice(None)), sets, _eval_config())
    assert get_protocol("zero_shot").metrics_blocked(score_rows, sets, _eval_config(), block=4) == whole


@pytest.mark.parametrize("gallery", ["class", "all"])
def test_fine_grained(gallery):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    sets = EvalSets(_images(labels, np.arange(40)), _images(labels, np.arange(40)), np.arange(40), True)
    scores = np.round(rng.random((40, 40)), 1)
    whole = _blocked_equals_whole("fine_grained", scores, sets, _eval_config(instance_gallery=gallery))
    assert set(whole) == {"acc@1", "acc@5", "rank[mean]", "rank[median]"}


def test_bad_blocks_and_block_scores_are_refused():
    rng = np.random.default_rng(4)
    sets = _zero_shot(rng)
    scores = rng.random((37, 230))
    protocol = get_protocol("zero_shot")
    with pytest.raises(ValueError, match=r"config.eval.query_block must be at least 1, got -2"):
        protocol.metrics_blocked(scores.__getitem__, sets, _eval_config(query_block=-2))
    with pytest.raises(ValueError, match=r"scores of queries 0:37 have shape \(37, 229\), expected \(37, 230\)"):
        protocol.metrics_blocked(lambda rows: scores[rows, 1:], sets, _eval_config())
    old = _eval_config()
    del old["query_block"]  # a run configured before query_block existed: the default block
    assert protocol.metrics_blocked(scores.__getitem__, sets, old) == protocol.metrics(scores, sets, old)
