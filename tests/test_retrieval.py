"""Search backends against a brute-force numpy ranking, and the on-disk index, with numbers; no trained model.

Float test data holds small integers, so every backend's dot products are exact and ties are real and many: the
rankings must agree item for item (ties by gallery index), on one device and on the 8 fake CPU devices.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jsbir import retrieval, sharding
from jsbir.metrics import pack_codes
from jsbir.retrieval import backends, build, topk
from jsbir.retrieval import index as index_lib

MESHES = {"1 device": lambda: sharding.make_mesh(jax.devices()[:1]), "8 devices": lambda: sharding.make_mesh()}


def reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of a full (Q, N) score matrix: descending, ties by index (a lexsort, no blocks)."""
    columns = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((columns, -scores.astype(np.float64)), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def float_data(n: int = 1003, q: int = 29, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1, 2, (n, d)).astype(np.float32), rng.integers(-1, 2, (q, d)).astype(np.float32)


def code_data(n: int = 1003, q: int = 29, bits: int = 21, seed: int = 1):
    rng = np.random.default_rng(seed)
    return pack_codes(rng.integers(0, 2, (n, bits))), pack_codes(rng.integers(0, 2, (q, bits)))


def hamming_matrix(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    bits_q, bits_g = np.unpackbits(q, axis=1), np.unpackbits(g, axis=1)
    return (bits_q[:, None, :] != bits_g[None, :, :]).sum(-1)


@pytest.mark.parametrize("mesh", sorted(MESHES))
@pytest.mark.parametrize("name", backends.EXACT_BACKENDS)
@pytest.mark.parametrize("k", [1, 10, 97, 1003])
def test_float_search_equals_brute_force(name, mesh, k):
    gallery, queries = float_data()
    want_s, want_i = reference(queries @ gallery.T, k)
    options = {"mesh": MESHES[mesh](), "block": 64} if name == "jax" else {}
    scores, ids = backends.make_backend(name, gallery, **options).search(queries, k)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_array_equal(scores, want_s)
    assert ids.dtype == np.int64 and scores.shape == (29, k)
    if k < len(gallery):  # the k-th score is tied in every row: the tie rule decides what is returned
        assert (((queries @ gallery.T) == want_s[:, -1:]).sum(1) > 1).all()


@pytest.mark.parametrize("mesh", sorted(MESHES))
@pytest.mark.parametrize("name", backends.EXACT_BACKENDS)
@pytest.mark.parametrize("k", [1, 10, 250])
def test_hamming_search_equals_brute_force(name, mesh, k):
    gallery, queries = code_data()
    distances = hamming_matrix(queries, gallery)
    want_s, want_i = reference(-distances, k)
    options = {"mesh": MESHES[mesh](), "block": 128} if name == "jax" else {}
    scores, ids = backends.make_backend(name, gallery, bits=21, **options).search(queries, k)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_array_equal(scores, want_s)
    assert -scores[0, 0] == distances[0].min()


def test_blockwise_search_equals_whole_gallery_search():
    gallery, queries = float_data(n=777)
    whole = topk.numpy_topk(queries, gallery, 40, block=777)
    for block in (1, 7, 100):
        np.testing.assert_array_equal(topk.numpy_topk(queries, gallery, 40, block=block)[1], whole[1])
    mesh = sharding.make_mesh()
    for block in (3, 16, 1 << 14):
        got = backends.make_backend("jax", gallery, mesh=mesh, block=block).search(queries, 40)
        np.testing.assert_array_equal(got[1], whole[1])
        np.testing.assert_array_equal(got[0], whole[0])


def test_tie_rule_on_hand_made_scores():
    gallery = np.array([[1.0], [2.0], [2.0], [0.0], [2.0], [-0.0]], np.float32)
    for name in backends.EXACT_BACKENDS:
        scores, ids = backends.make_backend(name, gallery).search(np.array([[1.0], [-1.0]], np.float32), 6)
        assert ids.tolist() == [[1, 2, 4, 0, 3, 5], [3, 5, 0, 1, 2, 4]], name
        assert scores[0].tolist() == [2, 2, 2, 1, 0, 0]


def test_ivf_recall_against_exact_search():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 16))
    gallery = (centres[rng.integers(0, 40, 4000)] + 0.3 * rng.standard_normal((4000, 16))).astype(np.float32)
    queries = (centres[rng.integers(0, 40, 50)] + 0.3 * rng.standard_normal((50, 16))).astype(np.float32)
    exact = backends.make_backend("faiss", gallery).search(queries, 10)[1]
    ivf = backends.make_backend("faiss_ivf", gallery, nprobe=4)
    assert ivf.nlist == 102
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ivf.search(queries, 10)[1], exact, strict=True)])
    assert 0.6 <= recall <= 1.0
    ivf.index.nprobe = ivf.nlist  # every cell probed: exact
    np.testing.assert_array_equal(ivf.search(queries, 10)[1], exact)
    with pytest.raises(ValueError, match="faiss_ivf"):
        backends.make_backend("faiss_ivf", code_data()[0], bits=21)


def test_unknown_backend_and_empty_gallery():
    with pytest.raises(ValueError, match="unknown search backend 'annoy'"):
        backends.make_backend("annoy", np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="empty"):
        backends.make_backend("numpy", np.zeros((0, 2), np.float32))


class StubEncoder:
    """An encoder without a model: the embedding of an 8-pixel image is its pixels at stride 4 over 255."""

    image_size, views, code_bits, method, workdir, learned_score = 8, 1, 0, "stub", "/nowhere", False

    def __init__(self, step: int = 1):
        self.config = ml_collections.ConfigDict({"eval": {"hash_bits": 8, "ks": (10,)}, "seed": 0, "model": {}})
        self.step = step

    def fingerprint(self) -> dict:
        return {"method": "stub", "model_config_sha256": "0",
                "checkpoint": {"subdir": "checkpoints", "step": self.step, "sha256": "ab"}}  # fmt: skip

    def encode(self, images: np.ndarray, modality: str):
        assert images.shape[1:] == (8, 8, 3) and images.dtype == np.uint8
        return images[:, ::4, ::4, :].reshape(len(images), -1).astype(np.float32) / 255, None


def write_photos(folder, count: int, seed: int, classes=("cat", "dog")) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        os.makedirs(folder / classes[i % len(classes)], exist_ok=True)
        path = folder / classes[i % len(classes)] / f"p{seed}_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return sorted(paths)


def test_index_round_trip_streams_in_batches_and_fits_itq_once(tmp_path):
    paths = write_photos(tmp_path / "photos", 30, seed=0)
    index = retrieval.index_files(StubEncoder(), paths, tmp_path / "idx", root=tmp_path / "photos", batch=7)
    assert len(index) == 30 and index.dim == 12 and index.class_names == ["cat", "dog"]
    expected = StubEncoder().encode(build.read_images(paths, 8), "photo")[0]
    np.testing.assert_array_equal(index.embeddings, expected)
    assert isinstance(index.embeddings, np.memmap)
    assert index.labels.tolist() == [0 if "/cat/" in p else 1 for p in paths]
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["count"] == 30 and manifest["codes"]["itq"]["bits"] == 8
    assert sorted(manifest["files"]) == sorted(["embeddings.npy", "labels.npy", "paths.json", "codes_itq.npy",
                                                "itq_mean.npy", "itq_projection.npy", "itq_rotation.npy"])  # fmt: skip
    assert manifest["files"]["embeddings.npy"] == index_lib.file_sha256(str(tmp_path / "idx" / "embeddings.npy"))
    # Queries are encoded with the ITQ stored at indexing: a gallery item's own embedding gets its own code.
    searcher = retrieval.get_searcher(index, "numpy", "itq")
    np.testing.assert_array_equal(searcher.query_codes(expected), index.codes("itq"))
    scores, ids = searcher.search(expected[:3], 1)
    assert scores[:, 0].tolist() == [0, 0, 0]
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temporary folder left


def test_adding_photos_equals_indexing_all_at_once(tmp_path):
    first = write_photos(tmp_path / "a", 12, seed=1)
    second = write_photos(tmp_path / "b", 9, seed=2, classes=("ant", "dog"))
    retrieval.index_files(StubEncoder(), first + second, tmp_path / "once", batch=5)
    grown = retrieval.index_files(StubEncoder(), first, tmp_path / "grown", batch=4)
    grown = retrieval.add_files(StubEncoder(), grown, second + first[:2], batch=4)  # known files are skipped
    for name in ("embeddings.npy", "codes_itq.npy", "itq_rotation.npy", "labels.npy", "paths.json"):
        assert index_lib.file_sha256(str(tmp_path / "once" / name)) == index_lib.file_sha256(
            str(tmp_path / "grown" / name)
        )
    # With classes, the names become the sorted union and old labels are renumbered.
    a = retrieval.index_files(StubEncoder(), first, tmp_path / "ca", root=tmp_path / "a")
    a = retrieval.add_files(StubEncoder(), a, second, root=tmp_path / "b")
    assert a.class_names == ["ant", "cat", "dog"]
    names = [a.class_names[c] for c in a.labels]
    assert names == [os.path.basename(os.path.dirname(p)) for p in first + second]
    with pytest.raises(retrieval.BadIndexError, match=r"another model \(checkpoint.step: 1 vs 2\)"):
        retrieval.add_files(StubEncoder(step=2), a, second)


def test_bad_index_files_are_refused_by_name(tmp_path):
    paths = write_photos(tmp_path / "photos", 6, seed=3)
    retrieval.index_files(StubEncoder(), paths, tmp_path / "idx")
    with pytest.raises(FileExistsError, match="already exists.*--overwrite"):
        retrieval.index_files(StubEncoder(), paths, tmp_path / "idx")
    assert len(retrieval.index_files(StubEncoder(), paths[:4], tmp_path / "idx", overwrite=True)) == 4
    labels = tmp_path / "idx" / "labels.npy"
    np.save(labels, np.zeros(4, np.int32) + 1)
    with pytest.raises(retrieval.BadIndexError, match="labels.npy has changed"):
        retrieval.open_index(tmp_path / "idx")
    os.remove(labels)
    with pytest.raises(retrieval.BadIndexError, match="labels.npy is missing"):
        retrieval.open_index(tmp_path / "idx")
    manifest = tmp_path / "idx" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 99}))
    with pytest.raises(retrieval.BadIndexError, match="format version 99"):
        retrieval.open_index(tmp_path / "idx")
    manifest.write_text("{not json")
    with pytest.raises(retrieval.BadIndexError, match="manifest.json is unreadable"):
        retrieval.open_index(tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="no index at"):
        retrieval.open_index(tmp_path / "nothing")


def test_bad_photos_and_queries_leave_nothing_behind(tmp_path):
    paths = write_photos(tmp_path / "photos", 5, seed=4)
    broken = tmp_path / "photos" / "cat" / "zz_broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(ValueError, match="zz_broken.png is not a readable image"):
        retrieval.index_files(StubEncoder(), retrieval.list_images(tmp_path / "photos"), tmp_path / "idx", batch=2)
    assert sorted(os.listdir(tmp_path)) == ["photos"]  # no index, no temporary folder
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty holds no image files"):
        retrieval.list_images(tmp_path / "empty")
    learned = StubEncoder()
    learned.learned_score = True  # as DSSA's HOLEF distance: no dot-product index can rank for it
    with pytest.raises(ValueError, match="'stub' ranks with a learned score, not a dot product: no index for it"):
        retrieval.index_files(learned, paths, tmp_path / "idx")
    index = retrieval.index_files(StubEncoder(), paths, tmp_path / "idx")
    searcher = retrieval.get_searcher(index, "numpy")
    with pytest.raises(ValueError, match=r"queries must be \(Q, 12\) 12-d embeddings"):
        searcher.search(np.zeros((2, 13), np.float32), 3)
    with pytest.raises(ValueError, match="NaN"):
        searcher.search(np.full((1, 12), np.nan, np.float32), 3)
    with pytest.raises(retrieval.BadIndexError, match="holds no 'hash' codes"):
        retrieval.get_searcher(index, "numpy", "hash")
    assert searcher.search(np.ones((1, 12), np.float32), 50)[1].shape == (1, 5)  # k clamped to the gallery


def test_faiss_backend_takes_the_blas_path_on_every_core():
    faiss = pytest.importorskip("faiss")
    from jsbir.retrieval import faiss_search

    gallery, queries = float_data()
    backend = backends.make_backend("faiss", gallery)
    assert faiss.cvar.distance_compute_blas_threshold == faiss_search.BLAS_QUERIES == 20
    assert faiss.omp_get_max_threads() == faiss_search.cores() == len(os.sched_getaffinity(0))
    # a batch above the threshold (BLAS) and one below (the scan) rank alike under the tie rule
    want = reference(queries @ gallery.T, 10)[1]
    np.testing.assert_array_equal(backend.search(queries, 10)[1], want)
    np.testing.assert_array_equal(
        np.concatenate([backend.search(queries[i : i + 1], 10)[1] for i in range(5)]), want[:5]
    )
