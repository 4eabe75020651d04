"""DSSA: Deep Spatial-Semantic Attention for fine-grained sketch-based image retrieval (Song, Yu, Song, Xiang and
Hospedales, ICCV 2017): a sketch retrieves its own photo among photos of the same category.

docs/methods/dssa.md says what follows the paper and the authors' released code. In short:

- One backbone shared by sketches and photos (Siamese): Sketch-a-Net on one-channel inputs (photos enter as edge
  maps), or the ImageNet EfficientNet-Lite0 with the channel replicated, whose map a 1x1 convolution brings to 256
  channels.
- Spatial attention with a residual connection on the last feature map f: ``f' = f + f * M``, M a softmax over
  positions (``jsbir.nn.attention.SpatialAttention``).
- Shortcut fusion: a coarse branch (max-pool, fc 512 with ReLU, fc 256, L2-normalised) and a fine branch (the
  attended map sum-pooled, L2-normalised), concatenated into one L2-normalised 512-d embedding. The fine branch can
  sum-pool each cell of a g x g grid instead (``fine_grid``), keeping the layout that tells two shoes apart.
- HOLEF, the higher-order learnable energy function ``D_W(x, y) = sum_ij W_ij (x_i - y_j)^2`` with W learned from
  the identity, in a triplet loss with an L1 (HOLEF-1) or squared Frobenius (HOLEF-2) penalty on ``W - I``; or the
  plain squared-Euclidean triplet (``loss.kind = "triplet"``, the released code's). A model trained with HOLEF ranks
  by ``-D_W``; with W = I that is the squared Euclidean distance, the same ranking as the dot product.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jsbir import losses
from jsbir.methods import api
from jsbir.nn import backbones
from jsbir.nn.attention import SpatialAttention
from jsbir.nn.sketch_a_net import GRAY_MEAN, max_pool

KINDS = ("holef1", "holef2", "triplet")
NEGATIVES = ("sampled", "batch_hard", "batch_all")
BRANCHES = ("coarse+fine", "coarse", "fine")
FINE_CHANNELS = 256  # the map's width: Sketch-a-Net's conv5 channels, and an RGB backbone's map by default


class Model(nn.Module):
    """The DSSA network and its HOLEF matrix.

    Attributes:
      backbone: a name in ``backbones.BACKBONES``: "sketch_a_net" (one channel) or an RGB backbone, fed the
        one-channel input replicated and rescaled to [-1, 1].
      backbone_args: (key, value) pairs for the backbone's constructor.
      attention: use the spatial attention (else f' = f).
      branches: the embedding's branches: "coarse+fine" (the shortcut fusion), "coarse" or "fine" alone.
      fine_grid: the fine branch sums the attended map over each cell of a fine_grid x fine_grid grid, each cell
        L2-normalised (1: over every position, the paper's).
      dropout: dropout rate after the coarse branch's first fully connected layer.
      embed_dim: the embedding's size (and W's): the coarse branch gives all of it, or half when fused; the fine
        branch's share is ``fine_grid ** 2`` cells of the map's channels, so the map has share / fine_grid ** 2
        channels (Sketch-a-Net's conv5 has 256; an RGB backbone's map is brought to that width).
      reduce_map: bring an RGB backbone's map to that width by a 1x1 convolution with ReLU; False uses the map as the
        backbone gives it, whose channels must then be that width (EfficientNet-Lite2's block 14: 120 channels, so
        1,920 dimensions over a 4 x 4 grid).
    """

    backbone: str = "sketch_a_net"
    backbone_args: tuple[tuple[str, Any], ...] = ()
    attention: bool = True
    branches: str = "coarse+fine"
    fine_grid: int = 1
    dropout: float = 0.0
    embed_dim: int = 512
    reduce_map: bool = True

    @classmethod
    def from_config(cls, config: Any, info: Any) -> Model:
        """Builds the model from ``config.model`` (the dataset's info carries nothing DSSA needs)."""
        del info
        return cls(
            backbone=config.backbone,
            backbone_args=tuple(sorted(config.backbone_args.items())),
            attention=config.attention,
            branches=config.branches,
            fine_grid=config.fine_grid,
            dropout=config.dropout,
            embed_dim=config.embed_dim,
            reduce_map=config.get("reduce_map", True),  # older saved configs lack the key
        )

    def setup(self):
        if self.branches not in BRANCHES:
            raise ValueError(f"config.model.branches={self.branches!r} is not one of {BRANCHES}")
        fine_dim = {"coarse+fine": self.embed_dim // 2, "coarse": 0, "fine": self.embed_dim}[self.branches]
        channels = fine_dim // self.fine_grid**2 if fine_dim else FINE_CHANNELS
        self.shared_net = backbones.get_backbone(self.backbone, **dict(self.backbone_args))
        fixed = self.backbone == "sketch_a_net" or not self.reduce_map
        if fine_dim and (fine_dim % self.fine_grid**2 or (fixed and channels != self.shared_net.channels)):
            raise ValueError(
                f"config.model.embed_dim={self.embed_dim} with branches={self.branches!r}, fine_grid={self.fine_grid}:"
                f" the fine branch's {fine_dim} dimensions must be {self.fine_grid**2} cells of the map's channels"
                + (f" ({self.backbone}'s {self.shared_net.channels})" if fixed else "")
            )
        self.reduce = None if fixed else nn.Dense(channels)
        self.spatial_attention = SpatialAttention() if self.attention else None
        if "coarse" in self.branches:
            self.fc6 = nn.Dense(512)
            self.fc7 = nn.Dense(self.embed_dim - fine_dim)
            self.drop = nn.Dropout(self.dropout)
        self.holef = self.param("holef", lambda _: jnp.eye(self.embed_dim, dtype=jnp.float32))

    def features(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """One-channel inputs -> the attended map, the mask (if any) and the embedding."""
        if self.backbone != "sketch_a_net":
            images = jnp.repeat((images + GRAY_MEAN) / 127.5 - 1.0, 3, axis=-1)
        f = self.shared_net(images, train=train)
        if self.reduce is not None:
            f = nn.relu(self.reduce(f))
        mask = None
        if self.spatial_attention is not None:
            f, mask = self.spatial_attention(f)
        parts = []
        if "coarse" in self.branches:
            pooled = max_pool(f) if min(f.shape[1:3]) >= 3 else f
            hidden = self.drop(nn.relu(self.fc6(pooled.reshape(pooled.shape[0], -1))), deterministic=not train)
            parts.append(losses.l2_normalise(self.fc7(hidden)))
        if "fine" in self.branches:
            parts.append(losses.l2_normalise(grid_sum(f, self.fine_grid)))
        return {"embedding": losses.l2_normalise(jnp.concatenate(parts, -1)), "mask": mask}

    def __call__(self, batch: dict[str, jax.Array], train: bool = False) -> tuple[jax.Array, dict[str, Any]]:
        out = {key: self.features(batch[key], train) for key in ("sketch", "photo", "negative") if key in batch}
        return out["sketch"]["embedding"], out

    def encode(self, images: jax.Array) -> jax.Array:
        """The test-time embedding (either modality: the backbone and heads are shared)."""
        return self.features(images)["embedding"]

    def distance_matrix(self) -> jax.Array:
        """The HOLEF matrix W."""
        return self.holef


def grid_sum(f: jax.Array, grid: int) -> jax.Array:
    """(B, H, W, C) -> (B, grid * grid * C): ``f`` summed over each cell of a grid x grid division of the positions
    (rows and columns as ``numpy.array_split`` divides them), each cell's sum L2-normalised; grid 1 is the
    normalised sum over every position.

    Raises:
      ValueError: the map has fewer rows or columns than the grid has cells.
    """
    height, width = f.shape[1:3]
    if min(height, width) < grid:
        raise ValueError(
            f"config.model.fine_grid={grid} needs a map of at least {grid} x {grid}, got {height} x {width}"
        )
    rows, cols = (np.array_split(np.arange(n), grid) for n in (height, width))
    cells = [jnp.sum(f[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1], axis=(1, 2)) for r in rows for c in cols]
    return jnp.concatenate([losses.l2_normalise(cell) for cell in cells], -1)


def holef_distance(x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """``D_W(x_a, y_b) = sum_ij W_ij (x_ai - y_bj)^2`` for every pair of rows: (A, B).

    Expanded as ``x^2 . W 1 + 1' W . y^2 - 2 x W y'`` so no (A, B, D, D) array is formed.
    """
    x, y, w = (jnp.asarray(a, jnp.float32) for a in (x, y, w))
    rows = (x * x) @ jnp.sum(w, axis=1)
    cols = (y * y) @ jnp.sum(w, axis=0)
    return rows[:, None] + cols[None, :] - 2.0 * (x @ w) @ y.T


def holef_paired(x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """``D_W(x_i, y_i)`` for row-paired inputs: (B,)."""
    x, y, w = (jnp.asarray(a, jnp.float32) for a in (x, y, w))
    return (x * x) @ jnp.sum(w, axis=1) + (y * y) @ jnp.sum(w, axis=0) - 2.0 * jnp.sum((x @ w) * y, axis=-1)


def triplet_objective(
    sketch: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
    w: jax.Array,
    config: Any,
    rows: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(the triplet term, the penalty on W) of ``config.kind``, with the negatives ``config.negatives`` names.

    ``max(0, m + D(s, p+) - D(s, p-))`` with ``D = D_W`` for HOLEF and the squared Euclidean distance for "triplet";
    the penalty is ``alpha ||W - I||_1`` (holef1), ``beta ||W - I||_F^2`` (holef2) or 0 (triplet). The negatives:

    - "sampled": each sketch's own sampled negative, the term averaged over the batch (the paper's);
    - "batch_hard": of every photo in the batch (positives and negatives of all rows) whose row differs from the
      sketch's own photo's, the closest to the sketch; averaged over the batch;
    - "batch_all": every such photo, the term averaged over all (sketch, photo) pairs.

    Args:
      rows: (the positives' training-photo rows, the negatives'), (B,) each; required by the batch negatives.
    """
    if config.kind not in KINDS:
        raise ValueError(f"config.loss.kind={config.kind!r} is not one of {KINDS}")
    if config.negatives not in NEGATIVES:
        raise ValueError(f"config.loss.negatives={config.negatives!r} is not one of {NEGATIVES}")
    if config.kind == "triplet":
        w = jnp.eye(sketch.shape[-1], dtype=jnp.float32)
    d_pos = holef_paired(sketch, positive, w)
    if config.negatives == "sampled":
        term = jnp.mean(jax.nn.relu(config.margin + d_pos - holef_paired(sketch, negative, w)))
    else:
        photos = jnp.concatenate([positive, negative])
        valid = jnp.concatenate(rows)[None, :] != rows[0][:, None]  # (B, 2B): not the sketch's own photo
        d_neg = holef_distance(sketch, photos, w)
        if config.negatives == "batch_hard":
            closest = jnp.min(jnp.where(valid, d_neg, jnp.inf), axis=1)
            term = jnp.mean(jax.nn.relu(config.margin + d_pos - closest))
        else:
            hinge = jax.nn.relu(config.margin + d_pos[:, None] - d_neg)
            term = jnp.sum(jnp.where(valid, hinge, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    offset = w - jnp.eye(w.shape[0], dtype=w.dtype)
    penalty = {
        "holef1": config.alpha * jnp.sum(jnp.abs(offset)),
        "holef2": config.beta * jnp.sum(offset * offset),
        "triplet": jnp.zeros(()),
    }[config.kind]
    return term, penalty


def loss_fn(
    model: Model,
    params: Any,
    model_state: Any,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    progress: jax.Array,
    config: Any,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
    """The DSSA loss on a batch of (sketch, own photo, negative photo) triplets and the photos' training rows (see
    :func:`triplet_objective`)."""
    del progress
    (_, out), updated = model.apply(
        {"params": params, **model_state}, batch, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
    )
    s, p, n = (out[k]["embedding"] for k in ("sketch", "photo", "negative"))
    rows = (batch["photo_row"], batch["negative_row"])
    term, penalty = triplet_objective(s, p, n, params["holef"], config, rows)
    d_pos, d_neg = jnp.sum((s - p) ** 2, -1), jnp.sum((s - n) ** 2, -1)
    measurements = {
        "loss_triplet": term,
        "loss_w_penalty": penalty,
        "w_offset_l1": jnp.sum(jnp.abs(params["holef"] - jnp.eye(params["holef"].shape[0]))),
        "train_triplet_accuracy": jnp.mean(d_pos < d_neg),
    }
    return term + penalty, ({**model_state, **updated}, measurements)


def embed(model: Model, variables: Any, images: jax.Array, modality: str) -> jax.Array:
    """The L2-normalised 512-d embedding of one-channel images (the network is shared by both modalities)."""
    del modality
    return model.apply(variables, images, method=Model.encode)


def score(model: Model, variables: Any, queries: jax.Array, gallery: jax.Array) -> jax.Array:
    """``-D_W(query, gallery item)``: the learned HOLEF distance (the squared Euclidean one while W = I)."""
    return -holef_distance(queries, gallery, model.apply(variables, method=Model.distance_matrix))


METHOD = api.Method(
    name="dssa",
    Model=Model,
    loss_fn=loss_fn,
    embed=embed,
    score=score,
    inputs=lambda config: api.InputSpec(sampler="instance_triplets", preprocess="gray_crop"),
    evaluation=lambda config: api.EvalSpec(protocol="fine_grained", views=config.eval.views),
    rng_streams=("dropout",),
    frozen=lambda config: "^holef$" if config.loss.kind == "triplet" else "",
)
