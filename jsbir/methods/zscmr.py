"""ZSCMR: "A Simplified Framework for Zero-shot Cross-Modal Sketch Data Retrieval" (Chaudhuri, Banerjee,
Bhattacharya and Datcu, CVPR Workshops 2020), a multi-stream encoder-decoder over pre-extracted features.

docs/methods/zscmr.md says where this follows the paper and where the authors' released code differed. In short:

- The inputs are backbone features, extracted once and cached (:mod:`jsbir.data.features`), or the user's own
  feature files; no image is decoded while training.
- Per modality an encoder (dropout on its input, then Dense layers) maps features into a shared space whose
  dimension is the class vectors' (word vectors), a classifier head scores the seen classes there, and a
  cross-decoder maps the shared code back to the *other* modality's features.
- Losses (each weighted in ``config.loss``): semantic alignment of both encodings to their class vector, the
  cross-modal triplet in both directions (a photo anchor against sketches, a sketch anchor against photos),
  cross reconstruction, classification, and the class-topology term: the batch's class centroids keep, along the
  edges of the minimum-spanning-tree class graph (``config.data.graph = "mst"``, built on the seen classes' full
  Euclidean word-vector distances), distances proportional to those of the class vectors.
- Test-time embeddings are the L2-normalised encodings (the dot product is the cosine); a photo's depends on that
  photo alone.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jsbir import losses
from jsbir.methods import api


class Encoder(nn.Module):
    """Features -> shared space: dropout on the input, then Dense layers (ReLU between them).

    Attributes:
      features: the shared space's dimension.
      hidden: widths of the hidden layers (none: one Dense, as in the paper).
      dropout: dropout rate on the input features (and on each hidden layer's output).
    """

    features: int
    hidden: tuple[int, ...] = ()
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(nn.Dropout(self.dropout, deterministic=not train)(x)))
        return nn.Dense(self.features)(nn.Dropout(self.dropout, deterministic=not train)(x))


class Decoder(nn.Module):
    """Shared space -> the other modality's features (their dimension is read from the target at call time).

    Attributes:
      hidden: widths of the hidden layers (none: one Dense, as in the paper).
    """

    hidden: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, z: jax.Array, dim: int) -> jax.Array:
        for width in self.hidden:
            z = nn.relu(nn.Dense(width)(z))
        return nn.Dense(dim)(z)


class Model(nn.Module):
    """Two encoders into the word-vector space, two classifier heads and two cross-decoders.

    Attributes:
      semantics: (num_classes, t) class vectors; rows of classes training may not use are zero.
      seen_mask: (num_classes,) bool numpy array of the training classes.
      graph_mask: (num_classes,) bool numpy array of the classes the topology term relates.
      class_graph: (num_classes, num_classes) bool class graph (the MST) whose edges the topology term keeps.
      hidden: encoder hidden widths.
      decoder_hidden: decoder hidden widths.
      dropout: encoder dropout rate.
      input_norm: L2-normalise the input features (the encoders' inputs; decoders still reconstruct raw features).
    """

    semantics: np.ndarray
    seen_mask: np.ndarray
    graph_mask: np.ndarray
    class_graph: np.ndarray
    hidden: tuple[int, ...] = ()
    decoder_hidden: tuple[int, ...] = ()
    dropout: float = 0.5
    input_norm: bool = False

    @classmethod
    def from_config(cls, config: Any, info: Any) -> Model:
        """Builds the model from ``config.model`` and the dataset's ``DatasetInfo``.

        Only the vectors of the classes training may relate (``info.graph_mask``: the seen ones unless the setting
        is transductive) are kept, so no other class's vector can reach a loss. With ``config.unit_semantics`` each
        vector is scaled to unit length first.
        """
        vectors = np.asarray(info.semantics, np.float32)
        if config.unit_semantics:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        vectors = np.where(info.graph_mask[:, None], vectors, 0.0)
        return cls(
            semantics=vectors.astype(np.float32),
            seen_mask=info.seen_mask,
            graph_mask=info.graph_mask,
            class_graph=np.asarray(info.class_graph, bool),
            hidden=tuple(config.hidden),
            decoder_hidden=tuple(config.decoder_hidden),
            dropout=config.dropout,
            input_norm=config.input_norm,
        )

    def setup(self):
        dim = self.semantics.shape[1]
        num_classes = self.semantics.shape[0]
        self.sketch_encoder = Encoder(dim, self.hidden, self.dropout)
        self.photo_encoder = Encoder(dim, self.hidden, self.dropout)
        self.sketch_classifier = nn.Dense(num_classes)
        self.photo_classifier = nn.Dense(num_classes)
        self.to_sketch = Decoder(self.decoder_hidden)  # g_is: a photo's code -> sketch features
        self.to_photo = Decoder(self.decoder_hidden)  # g_si: a sketch's code -> photo features

    def encode(self, features: jax.Array, modality: str, train: bool = False) -> jax.Array:
        """A modality's features in the shared space (not normalised)."""
        encoder = self.sketch_encoder if modality == "sketch" else self.photo_encoder
        if self.input_norm:
            features = losses.l2_normalise(features)
        return encoder(features, train)

    def __call__(self, batch: dict[str, jax.Array], train: bool = False) -> tuple[jax.Array, dict[str, Any]]:
        sketch, photo = batch["sketch"], batch["photo"]
        z_s, z_p = self.encode(sketch, "sketch", train), self.encode(photo, "photo", train)
        out = {
            "sketch": z_s,
            "photo": z_p,
            "sketch_logits": self.sketch_classifier(z_s),
            "photo_logits": self.photo_classifier(z_p),
            "sketch_from_photo": self.to_sketch(z_p, sketch.shape[-1]),
            "photo_from_sketch": self.to_photo(z_s, photo.shape[-1]),
        }
        return z_s, out


def semantic_loss(z: jax.Array, vectors: jax.Array) -> jax.Array:
    """mean_i ||z_i - S_i||^2: the encodings against their class vectors (rows paired)."""
    return jnp.mean(jnp.sum((z - vectors) ** 2, axis=-1))


def reconstruction_loss(reconstructed: jax.Array, target: jax.Array) -> jax.Array:
    """mean over rows and feature dimensions of the squared error (so its scale does not grow with D)."""
    return jnp.mean((reconstructed - target) ** 2)


def batch_mean_triplet(sketch: jax.Array, photo: jax.Array, labels: jax.Array, margin: float) -> jax.Array:
    """The released code's form: ``max(mean d(pos) - mean d(neg) + margin, 0)`` per direction, summed, with
    Euclidean distances, the positives being the pairs and the negatives every other-class pair of the batch."""
    dist = losses.pairwise_distance(sketch, photo, "euclidean")
    negative = labels[:, None] != labels[None, :]
    d_pos = jnp.mean(jnp.diagonal(dist))
    d_neg = jnp.sum(jnp.where(negative, dist, 0.0)) / jnp.maximum(jnp.sum(negative), 1)
    return 2.0 * jax.nn.relu(d_pos - d_neg + margin)


def centroid_topology_loss(
    z: jax.Array, labels: jax.Array, vectors: jax.Array, graph: jax.Array, related: jax.Array
) -> jax.Array:
    """Topology along the class graph's edges: the batch's class centroids against the class vectors.

    Args:
      z: (B, t) encodings.
      labels: (B,) their classes.
      vectors: (C, t) class vectors.
      graph: (C, C) bool edges that take part (the MST).
      related: (C,) bool classes the term may relate.

    Returns:
      ``losses.topology_loss`` of the centroids of the classes present in the batch, on the edges joining two of
      them, against the Euclidean distances of their vectors (0 when no edge joins two present classes).
    """
    onehot = jax.nn.one_hot(labels, vectors.shape[0], dtype=z.dtype)
    counts = jnp.sum(onehot, axis=0)
    centroids = (onehot.T @ z) / jnp.maximum(counts, 1.0)[:, None]
    distance = losses.pairwise_distance(vectors, vectors, "euclidean")
    return losses.topology_loss(centroids, distance, mask=(counts > 0) & related, pairs=graph)


# config.loss.triplet -> (sketch codes, photo codes, labels, loss config) -> L_tri, summed over both directions.
TRIPLETS = {
    "per_sample": lambda s, p, labels, c: (
        2.0 * losses.cross_modal_triplet_loss(s, p, labels, c.margin, "euclidean", c.mining)
    ),
    "batch_mean": lambda s, p, labels, c: batch_mean_triplet(s, p, labels, c.margin),
}


def classification_loss(logits: jax.Array, labels: jax.Array, seen: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the ``seen`` classes only (the others' logits are masked out)."""
    logits = losses.mask_classes(logits, seen)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def loss_fn(
    model: Model,
    params: Any,
    model_state: Any,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    progress: jax.Array,
    config: Any,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
    """The ZSCMR loss on one batch of class-matched feature pairs.

    L = w_sem L_sem + w_tri L_tri + w_rec L_rec + w_cls L_cls + w_topo L_topo, each summed over the two modalities
    (or directions):

    - L_sem = ||E_x(X) - S||^2 + ||E_y(Y) - S||^2 (semantic alignment, S the pair's class vector);
    - L_tri = max(d(I, S) - d(I, S~) + a, 0) + max(d(S, I) - d(S, I~) + a, 0) with Euclidean d, over every
      other-class negative of the batch (``config.triplet="per_sample"``, the paper's), or the released code's
      batch-mean form (``"batch_mean"``);
    - L_rec = mse(g_is(E_y(Y)), X) + mse(g_si(E_x(X)), Y) (cross reconstruction);
    - L_cls = CE(sketch logits) + CE(photo logits) over the seen classes;
    - L_topo = :func:`centroid_topology_loss` of the sketch and photo encodings together.

    Args:
      model: the Model.
      params: its parameters.
      model_state: other collections (none).
      batch: {"sketch", "photo", "label"} of feature vectors.
      rng: the dropout key.
      progress: unused.
      config: the ``config.loss`` section.

    Returns:
      (loss, (model_state, measurements)).
    """
    del progress
    _, out = model.apply({"params": params, **model_state}, batch, train=True, rngs={"dropout": rng})
    labels = batch["label"]
    vectors = jnp.asarray(model.semantics)
    seen = jnp.asarray(model.seen_mask)
    z_s, z_p = out["sketch"], out["photo"]
    target = vectors[labels]
    l_sem = semantic_loss(z_s, target) + semantic_loss(z_p, target)
    if config.triplet not in TRIPLETS:
        raise ValueError(f"config.loss.triplet={config.triplet!r} is not one of {sorted(TRIPLETS)}")
    l_tri = TRIPLETS[config.triplet](z_s, z_p, labels, config)
    l_rec = reconstruction_loss(out["sketch_from_photo"], batch["sketch"]) + reconstruction_loss(
        out["photo_from_sketch"], batch["photo"]
    )
    l_cls = sum(classification_loss(out[k], labels, seen) for k in ("sketch_logits", "photo_logits"))
    l_topo = centroid_topology_loss(
        jnp.concatenate([z_s, z_p]),
        jnp.concatenate([labels, labels]),
        vectors,
        jnp.asarray(model.class_graph),
        jnp.asarray(model.graph_mask),
    )
    total = (
        config.w_sem * l_sem
        + config.w_tri * l_tri
        + config.w_rec * l_rec
        + config.w_cls * l_cls
        + config.w_topo * l_topo
    )
    accuracy = 0.5 * sum(
        jnp.mean(jnp.argmax(losses.mask_classes(out[k], seen), -1) == labels) for k in ("sketch_logits", "photo_logits")
    )
    measurements = {
        "loss_sem": l_sem,
        "loss_tri": l_tri,
        "loss_rec": l_rec,
        "loss_cls": l_cls,
        "loss_topo": l_topo,
        "train_accuracy": accuracy,
    }
    return total, (model_state, measurements)


def embed(model: Model, variables: Any, features: jax.Array, modality: str) -> jax.Array:
    """L2-normalised shared-space encoding of one modality's features."""
    return losses.l2_normalise(model.apply(variables, features, modality, method=Model.encode))


METHOD = api.Method(
    name="zscmr",
    Model=Model,
    loss_fn=loss_fn,
    embed=embed,
    inputs=lambda config: api.InputSpec(sampler="features", preprocess="features"),
    rng_streams=("dropout",),
)
