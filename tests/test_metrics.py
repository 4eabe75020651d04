"""Tests for jsbir.metrics: each variant against plain-loop references, hand-computed numbers, ITQ.

The references below walk one ranked list with Python loops and share no code with the vectorised
implementation; the exact AP has a second reference built from precision/recall points at each
distinct threshold (sklearn's definition).
"""

import itertools
import math
import re

import numpy as np
import pytest

from jsbir import metrics

# ----------------------------------------------------------------------------- plain references


def ref_order(scores):
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))


def ref_ap_thresholds(scores, rel):
    total = sum(rel)
    if total == 0:
        return math.nan
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        retrieved = [j for j in range(len(scores)) if scores[j] >= threshold]
        hits = sum(rel[j] for j in retrieved)
        ap += (hits / total - previous_recall) * hits / len(retrieved)
        previous_recall = hits / total
    return ap


def ref_ap_exact_ranked(scores, rel):
    order, total = ref_order(scores), sum(rel)
    if total == 0:
        return math.nan
    ap, hits, i = 0.0, 0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        group_hits = sum(rel[order[m]] for m in range(i, j + 1))
        hits += group_hits
        ap += group_hits / total * hits / (j + 1)
        i = j + 1
    return ap


def ref_ap_stable(ranked, total=None):
    total = sum(ranked) if total is None else total
    if total == 0:
        return math.nan
    ap, hits = 0.0, 0
    for i, r in enumerate(ranked):
        if r:
            hits += 1
            ap += hits / (i + 1)
    return ap / total


def ref_voc(ranked, total):
    """A loop port of the VOCap used by SAKE/DSN/ZSE-SBIR."""
    if total == 0:
        return math.nan
    tp, recall, precision = 0, [], []
    for i, r in enumerate(ranked):
        tp += r
        recall.append(tp / total)
        precision.append(tp / (i + 1))
    mrec, mpre = [0.0] + recall + [1.0], [0.0] + precision + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1))


def ref_query(scores, rel, k):
    """Every per-query value of one query, from plain loops."""
    order = ref_order(scores)
    ranked = [rel[j] for j in order]
    kk, total = min(k, len(ranked)), sum(ranked)
    top_scores, top_rel = [scores[j] for j in order[:kk]], ranked[:kk]
    hits = sum(top_rel)
    sempcyc = ref_ap_thresholds(top_scores, top_rel)
    return {
        "exact": ref_ap_exact_ranked(scores, rel),
        "stable": ref_ap_stable(ranked),
        "voc": ref_voc(ranked, total),
        "sempcyc": 0.0 if math.isnan(sempcyc) else sempcyc,
        "sake": ref_voc(top_rel, min(kk, total)),
        "yelamarthi": sum(sum(top_rel[: i + 1]) / (i + 1) for i in range(kk) if top_rel[i]) / k,
        "k": hits / kk,
        "min": sum(ranked[: min(k, total)]) / min(k, total) if total else math.nan,
    }


def query_rows(scores, relevant):
    return zip(scores.tolist(), relevant.tolist(), strict=True)


def random_case(seed, q=14, n=30):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((q, n)), 1)  # one decimal: many ties
    scores[scores == 0.0] *= -1.0  # some -0.0, which must tie with +0.0
    relevant = rng.random((q, n)) < rng.random((q, 1))
    relevant[0] = False
    relevant[1] = True
    relevant[2] = False
    relevant[2, -1] = True
    return scores, relevant


# ----------------------------------------------------------------------------- AP variants


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_ap_references_agree_with_each_other(seed):
    scores, relevant = random_case(seed)
    for s, r in query_rows(scores, relevant):
        np.testing.assert_allclose(ref_ap_exact_ranked(s, r), ref_ap_thresholds(s, r))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("variant", ["exact", "stable", "voc"])
def test_average_precision_matches_reference(seed, variant):
    scores, relevant = random_case(seed)
    expected = [ref_query(s, r, 10)[variant] for s, r in query_rows(scores, relevant)]
    got = metrics.average_precision(scores, relevant, variant)
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(got), ~relevant.any(axis=1))
    thresholds = [ref_ap_thresholds(s, r) for s, r in query_rows(scores, relevant)]
    if variant == "exact":
        np.testing.assert_allclose(got, thresholds, rtol=1e-12, equal_nan=True)
    zero = np.nan_to_num(np.asarray(expected), nan=0.0).mean()
    drop = np.nanmean(expected)
    assert metrics.mean_average_precision(scores, relevant, variant) == pytest.approx(zero)
    assert metrics.mean_average_precision(scores, relevant, variant, "drop") == pytest.approx(drop)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("k", [1, 5, 12, 30, 200])
def test_map_at_k_and_precision_match_reference(seed, k):
    scores, relevant = random_case(seed)
    per_query = [ref_query(s, r, k) for s, r in query_rows(scores, relevant)]
    for variant in ("sempcyc", "sake", "yelamarthi"):
        expected = np.nanmean([p[variant] for p in per_query])
        got = metrics.map_at_k(scores, relevant, k, variant)
        assert got == pytest.approx(expected, rel=1e-12), variant
    for variant in ("k", "min"):
        expected = np.nanmean([p[variant] for p in per_query])
        assert metrics.precision_at_k(scores, relevant, k, variant) == pytest.approx(expected)


def test_hand_computed_average_precision():
    distinct = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]] * 2)
    relevant = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 0, 0]], dtype=bool)
    for variant in ("exact", "stable", "voc"):
        ap = metrics.average_precision(distinct, relevant, variant)
        assert ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2)  # 0.8333
    # Ranking [0, 1, 1]: P@2 = 1/2 is interpolated up to P@3 = 2/3 by VOC.
    assert metrics.average_precision(distinct, relevant, "stable")[1] == pytest.approx(0.5833333333)
    assert metrics.average_precision(distinct, relevant, "voc")[1] == pytest.approx(2 / 3)
    # Two tied items, the first relevant: sklearn sees one threshold with precision 1/2.
    tied = np.array([[0.9, 0.9], [0.9, 0.9]])
    rel = np.array([[1, 0], [0, 1]], dtype=bool)
    np.testing.assert_allclose(metrics.average_precision(tied, rel, "exact"), [0.5, 0.5])
    np.testing.assert_allclose(metrics.average_precision(tied, rel, "stable"), [1.0, 0.5])


def test_no_positive_policies():
    scores = np.array([[0.9, 0.1], [0.9, 0.1]])
    relevant = np.array([[True, False], [False, False]])
    assert metrics.mean_average_precision(scores, relevant) == 0.5
    assert metrics.mean_average_precision(scores, relevant, "voc", "drop") == 1.0
    assert metrics.map_at_k(scores, relevant, 1, "sempcyc") == 0.5
    assert metrics.map_at_k(scores, relevant, 1, "sake") == 1.0  # the empty query is dropped
    assert metrics.precision_at_k(scores, relevant, 2, "min") == 1.0  # the empty query is dropped
    with pytest.raises(ValueError, match="no_positive"):
        metrics.mean_average_precision(scores, relevant, no_positive="skip")


def test_methods_md_map_at_200_example():
    # 300 items, 3 relevant at ranks 1, 3 and 250: the same ranking under the three conventions.
    scores = -np.arange(300, dtype=np.float64)[None]
    relevant = np.zeros((1, 300), dtype=bool)
    relevant[0, [0, 2, 249]] = True
    total = 1 / 1 + 2 / 3
    assert metrics.map_at_k(scores, relevant, 200, "sempcyc") == pytest.approx(total / 2)  # 0.833
    assert metrics.map_at_k(scores, relevant, 200, "sake") == pytest.approx(total / 3)  # 0.556
    assert metrics.map_at_k(scores, relevant, 200, "yelamarthi") == pytest.approx(total / 200)
    assert metrics.precision_at_k(scores, relevant, 10, "k") == pytest.approx(0.2)
    assert metrics.precision_at_k(scores, relevant, 10, "min") == pytest.approx(2 / 3)


def test_zse_sbir_precision_reads_the_first_min_k_r_ranks():
    # Query of class 1, gallery labels [0, 1, 0], scores [.9, .8, .7], K = 10: R = 1, so only rank 1 counts, and it
    # is of class 0. Dividing the hits in the top 10 by min(10, R) would give 1.0 instead.
    scores = np.array([[0.9, 0.8, 0.7]])
    relevant = np.array([[False, True, False]])
    assert metrics.precision_at_k(scores, relevant, 10, "min") == 0.0
    values = metrics.retrieval_metrics(scores, np.array([1]), np.array([0, 1, 0]), ks=(10,))
    assert values["prec@10[min]"] == 0.0 and values["prec@10[k]"] == pytest.approx(1 / 3)


def test_yelamarthi_divides_by_200_with_a_smaller_gallery():
    # Three items, the relevant one first: AP sums to 1, divided by 200 (not by the 3 items there are).
    scores = np.array([[0.9, 0.8, 0.7]])
    relevant = np.array([[True, False, False]])
    assert metrics.map_at_k(scores, relevant, 200, "yelamarthi") == pytest.approx(1 / 200)
    assert metrics.map_at_k(scores, relevant, 200, "sake") == 1.0


def test_sake_map_at_k_interpolates():
    # Ranking [1, 0, 0, 1, 1] with 3 relevant: VOC lifts P@4 = 2/4 to P@5 = 3/5.
    scores = -np.arange(5.0)[None]
    relevant = np.array([[1, 0, 0, 1, 1]], dtype=bool)
    assert metrics.map_at_k(scores, relevant, 5, "sake") == pytest.approx((1 + 0.6 + 0.6) / 3)
    assert metrics.map_at_k(scores, relevant, 5, "sempcyc") == pytest.approx((1 + 0.5 + 0.6) / 3)


def test_class_mean_average_precision():
    scores = np.array([[0.9, 0.5, 0.1]] * 3)
    relevant = np.eye(3, dtype=bool)  # stable APs 1, 1/2, 1/3
    labels = np.array([7, 7, 3])
    expected = ((1 + 0.5) / 2 + 1 / 3) / 2
    got = metrics.class_mean_average_precision(scores, relevant, labels, "stable")
    assert got == pytest.approx(expected)
    assert metrics.mean_average_precision(scores, relevant, "stable") == pytest.approx(11 / 18)


# ----------------------------------------------------------------------------- ranking


def test_rank_is_stable_and_handles_signed_zero_and_unsigned():
    scores = np.array([[0.5, 0.9, 0.5, -0.0, 0.0, 0.5]])
    np.testing.assert_array_equal(metrics.rank(scores), [[1, 0, 2, 5, 3, 4]])
    np.testing.assert_array_equal(metrics.rank(np.array([[0, 255, 3]], np.uint8)), [[1, 2, 0]])
    np.testing.assert_array_equal(metrics.rank(scores.astype(np.float16)), [[1, 0, 2, 5, 3, 4]])


def test_nan_scores_are_rejected():
    scores = np.array([[0.1, np.nan]])
    relevant = np.array([[True, False]])
    for call in (
        lambda: metrics.rank(scores),
        lambda: metrics.average_precision(scores, relevant),
        lambda: metrics.accuracy_at_k(scores, np.array([0]), 1),
        lambda: metrics.retrieval_metrics(scores, np.array([0]), np.array([0, 1])),
    ):
        with pytest.raises(ValueError, match="NaN"):
            call()


def test_accuracy_at_k_with_ties():
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.5, 0.9, 0.5, 0.1], [0.0, -0.0, 1.0, 0.3]])
    targets = np.array([2, 0, 1])  # stable ranks 2, 1 and 3
    assert metrics.accuracy_at_k(scores, targets, 1) == 0.0
    assert metrics.accuracy_at_k(scores, targets, 2) == pytest.approx(1 / 3)
    assert metrics.accuracy_at_k(scores, targets, 3) == pytest.approx(2 / 3)
    assert metrics.accuracy_at_k(scores, targets, 4) == 1.0
    assert metrics.fine_grained_metrics(scores, targets, ks=(1, 3)) == {
        "acc@1": 0.0,
        "acc@3": pytest.approx(2 / 3),
        "rank[mean]": 3.0,  # 1-based ranks 3, 2 and 4
        "rank[median]": 3.0,
    }
    # The target's rank equals its position in rank() on tie-heavy random data.
    random_scores, _ = random_case(5)
    targets = np.arange(random_scores.shape[0]) * 2
    positions = np.argmax(metrics.rank(random_scores) == targets[:, None], axis=1)
    for k in (1, 3, 10):
        assert metrics.accuracy_at_k(random_scores, targets, k) == pytest.approx(np.mean(positions < k))


# ----------------------------------------------------------------------------- chance level


def test_chance_map_matches_enumeration_and_monte_carlo():
    # Exact enumeration of every placement of 2 relevant items among 4.
    placements = [[int(i in chosen) for i in range(4)] for chosen in itertools.combinations(range(4), 2)]
    enumerated = np.mean([ref_ap_stable(p) for p in placements])
    relevant = np.array([[1, 1, 0, 0]], dtype=bool)
    assert metrics.chance_map(relevant) == pytest.approx(enumerated, rel=1e-12)

    rng = np.random.default_rng(0)
    n = 20
    for count in (0, 1, 5, 20):
        row = np.zeros(n, dtype=bool)
        row[:count] = True
        perms = np.argsort(rng.random((2000, n)), axis=1)
        ranked = row[perms]
        precision = np.cumsum(ranked, axis=1) / np.arange(1, n + 1)
        aps = (ranked * precision).sum(axis=1) / max(count, 1)
        assert metrics.chance_map(row[None]) == pytest.approx(aps.mean(), abs=0.01), count
    assert metrics.chance_map(np.array([[True]])) == 1.0
    assert metrics.chance_map(np.array([[False]])) == 0.0
    assert metrics.chance_map(np.ones((2, 7), dtype=bool)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- ITQ and Hamming


def itq_data(seed=0, n=400, d=24):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 3.0


def test_itq_codes_are_reproducible_and_signed():
    x = itq_data()
    model = metrics.fit_itq(x, 16)
    codes = model.encode(x)
    assert codes.dtype == np.int8 and codes.shape == (400, 16)
    assert set(np.unique(codes)) == {-1, 1}
    again = metrics.fit_itq(x, 16)
    np.testing.assert_array_equal(again.encode(x), codes)
    np.testing.assert_array_equal(model.encode(x[3]), codes[3])
    np.testing.assert_allclose(model.rotation.T @ model.rotation, np.eye(16), atol=1e-10)
    np.testing.assert_allclose(model.projection.T @ model.projection, np.eye(16), atol=1e-10)
    pivots = np.argmax(np.abs(model.projection), axis=0)
    assert (model.projection[pivots, np.arange(16)] > 0).all()
    # Negated features give the same directions (sign-fixed PCA) and hence exactly negated codes.
    flipped = metrics.fit_itq(-x, 16)
    np.testing.assert_array_equal(flipped.encode(-x), -codes)


def test_itq_procrustes_loss_is_monotone_and_sempcyc_is_not():
    x = itq_data()
    losses = np.asarray(metrics.fit_itq(x, 16, iterations=50).losses)
    assert losses.shape == (50,)
    assert (np.diff(losses) <= 1e-9 * losses[0]).all()
    assert losses[-1] < losses[0]
    buggy = metrics.fit_itq(x, 16, iterations=50, update="sempcyc")
    assert (np.diff(buggy.losses) > 0).any()
    np.testing.assert_allclose(buggy.rotation.T @ buggy.rotation, np.eye(16), atol=1e-10)


def test_procrustes_update_beats_random_rotations():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((200, 8))
    b = np.sign(rng.standard_normal((200, 8)))
    best = np.sum((b - v @ metrics.hashing._rotation_update(b, v, "procrustes")) ** 2)
    for _ in range(100):
        q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
        assert best <= np.sum((b - v @ q) ** 2) + 1e-9
    assert best < np.sum((b - v @ metrics.hashing._rotation_update(b, v, "sempcyc")) ** 2)


def test_itq_rejects_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        metrics.fit_itq(np.zeros((10, 4)), 5)
    with pytest.raises(ValueError, match="update"):
        metrics.fit_itq(np.zeros((10, 4)), 2, update="svd")


@pytest.mark.parametrize("bits", [1, 7, 8, 37, 64, 100])
@pytest.mark.parametrize("bitwise_count", [True, False])
def test_hamming_matches_dot_product_and_brute_force(bits, bitwise_count, monkeypatch):
    monkeypatch.setattr(metrics.hashing, "_HAS_BITWISE_COUNT", bitwise_count and metrics.hashing._HAS_BITWISE_COUNT)
    monkeypatch.setattr(metrics.ranking, "_CHUNK_ELEMS", 50)  # several chunks
    rng = np.random.default_rng(bits)
    a = np.where(rng.random((9, bits)) > 0.5, 1, -1).astype(np.int8)
    b = np.where(rng.random((11, bits)) > 0.5, 1, -1).astype(np.int8)
    packed_a, packed_b = metrics.pack_codes(a), metrics.pack_codes(b)
    assert packed_a.dtype == np.uint8 and packed_a.shape == (9, math.ceil(bits / 8))
    np.testing.assert_array_equal(np.unpackbits(packed_a, axis=-1, count=bits), a > 0)
    distance = metrics.hamming_distance(packed_a, packed_b, bits)
    assert distance.dtype == np.int32
    if bits % 8:  # stray padding bits must not count
        dirty = packed_a.copy()
        dirty[:, -1] |= (1 << (8 - bits % 8)) - 1
        np.testing.assert_array_equal(metrics.hamming_distance(dirty, packed_b, bits), distance)
    dot = a.astype(np.int64) @ b.T.astype(np.int64)
    np.testing.assert_array_equal(distance, (bits - dot) // 2)
    np.testing.assert_array_equal(distance, (a[:, None] != b[None]).sum(-1))
    scores = metrics.hamming_scores(packed_a, packed_b, bits)
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, -distance)


def test_hamming_ties_rank_by_gallery_index():
    gallery = np.array([[1, -1, 1], [1, 1, 1], [1, -1, 1], [-1, -1, -1]], dtype=np.int8)
    query = np.array([[1, -1, 1]], dtype=np.int8)
    scores = metrics.hamming_scores(metrics.pack_codes(query), metrics.pack_codes(gallery), 3)
    np.testing.assert_array_equal(scores, [[0, -1, 0, -2]])
    np.testing.assert_array_equal(metrics.rank(scores), [[0, 2, 1, 3]])


# ----------------------------------------------------------------------------- report dictionaries


def test_retrieval_metrics_keys_and_values(monkeypatch):
    rng = np.random.default_rng(4)
    scores = np.round(rng.random((25, 260)), 2)
    query_labels = rng.integers(0, 6, 25)  # class 5 has no gallery item: no relevant items
    gallery_labels = rng.integers(0, 5, 260)
    relevant = query_labels[:, None] == gallery_labels[None, :]
    got = metrics.retrieval_metrics(scores, query_labels, gallery_labels, ks=(10, 100))
    expected = {
        "map@all[exact]": metrics.mean_average_precision(scores, relevant, "exact"),
        "map@all[stable]": metrics.mean_average_precision(scores, relevant, "stable"),
        "map@all[voc,drop-empty]": metrics.mean_average_precision(scores, relevant, "voc", "drop"),
        "map@all[class-mean]": metrics.class_mean_average_precision(scores, relevant, query_labels, "voc"),
        "map@200[sempcyc]": metrics.map_at_k(scores, relevant, 200, "sempcyc"),
        "map@200[sake]": metrics.map_at_k(scores, relevant, 200, "sake"),
        "map@200[yelamarthi]": metrics.map_at_k(scores, relevant, 200, "yelamarthi"),
        "prec@10[k]": metrics.precision_at_k(scores, relevant, 10, "k"),
        "prec@10[min]": metrics.precision_at_k(scores, relevant, 10, "min"),
        "prec@100[k]": metrics.precision_at_k(scores, relevant, 100, "k"),
        "prec@100[min]": metrics.precision_at_k(scores, relevant, 100, "min"),
        "map@all[chance]": metrics.chance_map(relevant),
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got["map@all[exact]"] > got["map@all[chance]"] * 0.5  # sanity: a real number
    # Processing the queries one at a time changes nothing.
    monkeypatch.setattr(metrics.ranking, "_CHUNK_ELEMS", 1)
    assert metrics.retrieval_metrics(scores, query_labels, gallery_labels, ks=(10, 100)) == got
    # Every reported key has a description.
    for key in [*got, "acc@1"]:
        assert re.sub(r"^(prec|acc)@\d+", r"\1@K", key) in metrics.METRIC_DESCRIPTIONS, key


def test_unknown_variants_are_rejected():
    scores, relevant = random_case(0)
    with pytest.raises(ValueError, match="variant"):
        metrics.average_precision(scores, relevant, "interpolated")
    with pytest.raises(ValueError, match="variant"):
        metrics.map_at_k(scores, relevant, 200, "sklearn")
    with pytest.raises(ValueError, match="k must be"):
        metrics.precision_at_k(scores, relevant, 0)


def test_itq_conventions():
    rng = np.random.default_rng(0)
    queries, gallery = rng.normal(size=(40, 12)), rng.normal(size=(60, 12))
    model = metrics.fit_itq(gallery, 8, seed=1)
    q, g = metrics.itq_codes(queries, gallery, 8, "gallery", seed=1)
    np.testing.assert_array_equal(q, model.encode(queries))
    np.testing.assert_array_equal(g, model.encode(gallery))
    # SEM-PCYC's convention: fitted on the queries, each set centred on its own mean, so moving the whole gallery
    # changes none of its codes (while the gallery convention refits on it).
    q1, g1 = metrics.itq_codes(queries, gallery, 8, "sempcyc", seed=1)
    q2, g2 = metrics.itq_codes(queries, gallery + 5.0, 8, "sempcyc", seed=1)
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(q1, metrics.fit_itq(queries, 8, seed=1).encode(queries))
    with pytest.raises(ValueError, match="ITQ convention"):
        metrics.itq_codes(queries, gallery, 8, "query")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_descending_order_is_the_stable_argsort(dtype):
    rng = np.random.default_rng(9)
    scores = np.round(rng.standard_normal((6, 500)), 1).astype(dtype)  # many ties, negative and positive
    scores[:, :40] = rng.choice([np.inf, -np.inf, 0.0, -0.0, np.finfo(dtype).max, -np.finfo(dtype).tiny], (6, 40))
    block = metrics.ranking._sortable(scores)
    expected = np.array([ref_order(list(row)) for row in block])
    np.testing.assert_array_equal(metrics.ranking._descending_order(block), expected)
    np.testing.assert_array_equal(metrics.rank(scores), expected)
