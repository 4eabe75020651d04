"""ITQ binarisation and Hamming ranking of binary codes; plain numpy.

ITQ (Gong et al.) is the field's standard binariser for float embeddings: PCA to `bits` dimensions, then an
orthogonal rotation fitted by alternating sign quantisation and orthogonal Procrustes. Codes are packed 8 bits a
byte, and Hamming distances are popcounts of XORs; `hamming_scores` turns them into similarities that rank
exactly as Hamming distance with ties broken by gallery index.
"""

import dataclasses
import math

import numpy as np

from jsbir.metrics.ranking import _check_variant, _row_chunks

ITQ_UPDATES = ("procrustes", "sempcyc")
# Which set ITQ is fitted on and how each set is centred (see `itq_codes`).
ITQ_CONVENTIONS = ("gallery", "sempcyc")


@dataclasses.dataclass(frozen=True, eq=False)
class ItqModel:
    """A fitted ITQ binariser: code = sign(((x - mean) @ projection) @ rotation), as +1/-1.

    Attributes:
      mean: (d,) feature mean removed before projecting.
      projection: (d, bits) top principal directions, each signed so that its largest-magnitude
        component is positive (eigenvector signs are otherwise arbitrary, and so would be codes).
      rotation: (bits, bits) orthogonal rotation learnt by ITQ.
      losses: quantisation loss ||B - V R||_F^2 after each iteration's rotation update.
    """

    mean: np.ndarray
    projection: np.ndarray
    rotation: np.ndarray
    losses: list[float]

    @property
    def bits(self) -> int:
        return self.rotation.shape[0]

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Encodes (..., d) features as (..., bits) int8 codes in {-1, +1} (+1 where > 0)."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) @ self.projection @ self.rotation
        return np.where(z > 0, 1, -1).astype(np.int8)


def _rotation_update(b: np.ndarray, v: np.ndarray, update: str) -> np.ndarray:
    # argmin_R ||B - V R||_F over orthogonal R maximises tr(R^T V^T B); with B^T V = U S Vh,
    # V^T B = Vh^T S U^T, so R = Vh^T U^T attains tr(S). numpy returns Vh, not V: the copied code
    # forgot that and uses Vh @ U^T.
    u, _, vh = np.linalg.svd(b.T @ v)
    return vh.T @ u.T if update == "procrustes" else vh @ u.T


def fit_itq(
    features: np.ndarray,
    bits: int,
    iterations: int = 50,
    seed: int = 0,
    update: str = "procrustes",
) -> ItqModel:
    """Fits ITQ (Gong & Lazebnik, CVPR 2011): PCA to `bits` dims, then a learnt rotation.

    Each iteration sets B = sign(V R) and then R to the orthogonal Procrustes solution of
    min_R ||B - V R||_F: with the SVD B^T V = U S Vh, R = Vh^T U^T. Both steps can only lower the
    loss, so `losses` is non-increasing.

    Args:
      features: (n, d) training features.
      bits: code length, at most d.
      iterations: number of (B, R) alternations (the field uses 50).
      seed: seed of the random orthogonal initial rotation.
      update: "procrustes" (correct) or "sempcyc", the update of the widely copied SEM-PCYC/DSN
        `itq.py`, R = Vh @ U^T (numpy's SVD returns V already transposed, so this applies the
        transpose of the right factor). It is offered only to reproduce published codes: it does
        not solve the Procrustes problem and its loss is not monotone.

    Returns:
      The fitted ItqModel.
    """
    _check_variant("ITQ update", update, ITQ_UPDATES)
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (n, d) array, got {x.shape}")
    if int(bits) != bits or not 1 <= bits <= x.shape[1]:
        raise ValueError(f"bits={bits} must be an integer in [1, d={x.shape[1]}]")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    mean = x.mean(axis=0)
    x = x - mean
    eigenvalues, eigenvectors = np.linalg.eigh(x.T @ x / max(x.shape[0] - 1, 1))
    projection = eigenvectors[:, np.argsort(-eigenvalues, kind="stable")[:bits]]
    pivots = np.argmax(np.abs(projection), axis=0)
    projection = projection * np.sign(projection[pivots, np.arange(bits)])
    v = x @ projection

    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((bits, bits)))
    losses = []
    for _ in range(iterations):
        b = np.where(v @ rotation > 0, 1.0, -1.0)
        rotation = _rotation_update(b, v, update)
        losses.append(float(np.sum((b - v @ rotation) ** 2)))
    return ItqModel(mean=mean, projection=projection, rotation=rotation, losses=losses)


def itq_codes(
    queries: np.ndarray, gallery: np.ndarray, bits: int, convention: str = "gallery", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """ITQ codes of a query set and a gallery under one of two conventions.

    Args:
      queries: (Q, d) query features.
      gallery: (N, d) gallery features.
      bits: code length.
      convention: "gallery" (ITQ fitted on the gallery, both sets centred on the gallery's mean: the gallery is
        what an index holds, queries arrive one at a time) or "sempcyc" (SEM-PCYC's evaluation: fitted on the
        queries, each set centred on its own mean).
      seed: the initial rotation's seed.

    Returns:
      (Q, bits) and (N, bits) int8 codes in {-1, +1}.
    """
    _check_variant("ITQ convention", convention, ITQ_CONVENTIONS)
    if convention == "gallery":
        model = fit_itq(gallery, bits, seed=seed)
        return model.encode(queries), model.encode(gallery)
    model = fit_itq(queries, bits, seed=seed)
    own = [np.asarray(x, np.float64) - np.mean(x, axis=0) + model.mean for x in (queries, gallery)]
    return model.encode(own[0]), model.encode(own[1])


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Packs (..., bits) codes (+1/-1, or 1/0) into (..., ceil(bits / 8)) uint8, bit = code > 0."""
    return np.packbits(np.asarray(codes) > 0, axis=-1)


_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")  # numpy >= 2.0
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _as_words(packed: np.ndarray) -> np.ndarray:
    if not _HAS_BITWISE_COUNT:
        return packed
    # Zero padding to whole uint64 words leaves the XOR popcount unchanged and is 8x fewer ops.
    padded = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))
    return np.ascontiguousarray(padded).view(np.uint64)


def hamming_distance(packed_a: np.ndarray, packed_b: np.ndarray, bits: int) -> np.ndarray:
    """Hamming distances between packed codes (popcount of XOR).

    Args:
      packed_a: (Qa, ceil(bits / 8)) uint8 from `pack_codes`.
      packed_b: (Qb, ceil(bits / 8)) uint8 from `pack_codes`.
      bits: code length; padding bits beyond it are ignored.

    Returns:
      (Qa, Qb) int32 distances.
    """
    nbytes = math.ceil(bits / 8)
    a, b = np.asarray(packed_a, dtype=np.uint8), np.asarray(packed_b, dtype=np.uint8)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != nbytes or b.shape[1] != nbytes:
        raise ValueError(f"packed codes {a.shape}, {b.shape} do not hold {bits} bits per row")
    mask = np.full(nbytes, 0xFF, dtype=np.uint8)
    if bits % 8:
        mask[-1] = (0xFF << (8 - bits % 8)) & 0xFF  # packbits fills the most significant bit first
    a, b = _as_words(a & mask), _as_words(b & mask)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    for rows in _row_chunks(a.shape[0], b.shape[0] * b.shape[1]):
        xor = a[rows, None, :] ^ b[None, :, :]
        counts = np.bitwise_count(xor) if _HAS_BITWISE_COUNT else _POPCOUNT8[xor]
        out[rows] = counts.sum(axis=-1, dtype=np.int32)
    return out


def hamming_scores(packed_q: np.ndarray, packed_g: np.ndarray, bits: int) -> np.ndarray:
    """Similarity scores for hash codes: -Hamming distance as float32.

    Feeding these to the metric functions ranks by Hamming distance; the many ties between codes
    are broken stably by gallery index (or grouped, for the "exact"/"sempcyc" conventions).

    Args:
      packed_q: (Q, ceil(bits / 8)) uint8 query codes.
      packed_g: (N, ceil(bits / 8)) uint8 gallery codes.
      bits: code length.

    Returns:
      (Q, N) float32 scores, higher = closer.
    """
    return -hamming_distance(packed_q, packed_g, bits).astype(np.float32)
