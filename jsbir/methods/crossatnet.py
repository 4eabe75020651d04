"""CrossATNet: cross-modal attention, graph-CNN semantics and learned hash codes for zero-shot SBIR (Chaudhuri,
Banerjee, Bhattacharya and Datcu, Image and Vision Computing; arXiv 2104.09918).

docs/methods/crossatnet.md says which parts follow the paper and which are our reading. In short:

- A backbone per modality gives feature maps. The sketch's pooled feature, projected, is the query of a multi-head
  attention over the photo's feature map (keys and values projected from it): the sketch guides which parts of the
  photo make its feature. A gallery photo has no sketch, so a self-attention branch queries with the photo's own
  pooled feature over the same keys and values, and is trained to put its attention where the sketch-guided one
  does (KL divergence to the sketch-guided weights, which are held fixed in that term). When the two maps agree
  the two photo features are equal, so test-time photos, embedded by the self branch, land where training put
  them; a triplet term on the self-branch embedding ties them directly as well.
- The cross-modal triplet loss in both directions (sketch anchors against photos, photo anchors against
  sketches) on the L2-normalised embeddings.
- Class prototypes from a 2-layer jraph GCN over the class graph of the word vectors (a minimum spanning tree by
  default, as in the authors' earlier code); embeddings of both modalities meet the seen-class prototypes in a
  cosine softmax, and a topology term keeps prototype distances proportional to the semantic distances.
- Hash codes: one linear layer shared by both modalities, relaxed by ``tanh(beta x)`` with ``beta`` annealed
  upwards; the cross-modal triplet loss on the relaxed codes, a quantisation loss pulling them to +-1 and a
  bit-balance loss. Test-time codes are the signs, ranked by Hamming distance.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jsbir import losses
from jsbir.methods import api
from jsbir.nn import attention, backbones, gcn, hashing


class Head(nn.Module):
    """Features -> shared-space embedding: (BatchNorm,) Dense, ReLU, Dense.

    ``norm`` batch-normalises the input (batch statistics in training, running averages at test), so that
    embeddings do not all start in the one direction that pooled post-ReLU features share.
    """

    features: int
    hidden: int = 256
    norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(self.features)(nn.relu(nn.Dense(self.hidden)(x)))


class Model(nn.Module):
    """The CrossATNet network: two backbones, sketch-guided and self attention over the photo map, two embedding
    heads, a shared hash layer and a class GCN.

    Attributes:
      graph: padded class graph whose nodes are the class side-information vectors.
      num_classes: real classes in ``graph``.
      seen_mask: (num_classes,) bool numpy array of the training classes.
      graph_mask: (num_classes,) bool numpy array of the classes the topology term relates (the seen ones unless
        the dataset's semantics are transductive).
      semantic_distance: (num_classes, num_classes) semantic distances for the topology term.
      embed_dim: embedding size.
      hash_bits: code length.
      backbone: backbone name in ``backbones.BACKBONES``.
      backbone_args: (key, value) pairs passed to the backbone's constructor.
      shared_backbone: one backbone for both modalities.
      heads: attention heads.
      key_features: attention query and key features.
      value_features: attention value features (the attended photo feature).
      gcn_features: hidden widths of the GCN; its output is ``embed_dim``.
      head_norm: batch-normalise the embedding heads' inputs.
    """

    graph: jraph.GraphsTuple
    num_classes: int
    seen_mask: np.ndarray
    graph_mask: np.ndarray
    semantic_distance: np.ndarray
    embed_dim: int = 64
    hash_bits: int = 64
    backbone: str = "compact_cnn"
    backbone_args: tuple[tuple[str, Any], ...] = ()
    shared_backbone: bool = False
    heads: int = 4
    key_features: int = 128
    value_features: int = 256
    gcn_features: tuple[int, ...] = (128,)
    head_norm: bool = False

    @classmethod
    def from_config(cls, config: Any, info: Any) -> Model:
        """Builds the model from ``config.model`` and the dataset's ``DatasetInfo``."""
        return cls(
            graph=gcn.padded_graph(info.class_graph, info.semantics),
            num_classes=info.num_classes,
            seen_mask=info.seen_mask,
            graph_mask=info.graph_mask,
            semantic_distance=info.semantic_distance,
            embed_dim=config.embed_dim,
            hash_bits=config.hash_bits,
            backbone=config.backbone,
            backbone_args=tuple(sorted(config.backbone_args.items())),
            shared_backbone=config.shared_backbone,
            heads=config.heads,
            key_features=config.key_features,
            value_features=config.value_features,
            gcn_features=tuple(config.gcn_features),
            head_norm=config.head_norm,
        )

    def setup(self):
        self.sketch_net, self.photo_net = backbones.modality_backbones(
            self.backbone, self.backbone_args, self.shared_backbone
        )
        self.sketch_query = nn.Dense(self.key_features)
        self.photo_query = nn.Dense(self.key_features)
        self.photo_attention = attention.AttentionPool(self.heads, self.key_features, self.value_features)
        self.sketch_head = Head(self.embed_dim, norm=self.head_norm)
        self.photo_head = Head(self.embed_dim, norm=self.head_norm)
        self.hash = nn.Dense(self.hash_bits)
        self.class_gcn = gcn.GCN(features=(*self.gcn_features, self.embed_dim))

    def sketch(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """A sketch's pooled feature, attention query and embedding."""
        pooled = jnp.mean(self.sketch_net(images, train=train), axis=(1, 2))
        return {"pooled": pooled, "query": self.sketch_query(pooled), "embedding": self.sketch_head(pooled, train)}

    def photo(self, images: jax.Array, query: jax.Array | None = None, train: bool = False) -> dict[str, jax.Array]:
        """A photo's embedding by self-attention, and by the given (sketch) query's attention when one is given."""
        fmap = self.photo_net(images, train=train)
        pooled, weights = self.photo_attention(self.photo_query(jnp.mean(fmap, axis=(1, 2))), fmap)
        out = {"embedding": self.photo_head(pooled, train), "attention": weights}
        if query is not None:
            guided, guided_weights = self.photo_attention(query, fmap)
            out.update(guided_embedding=self.photo_head(guided, train), guided_attention=guided_weights)
        return out

    def encode(self, images: jax.Array, modality: str) -> jax.Array:
        """The test-time embedding (not normalised): a sketch's, or a photo's by self-attention alone."""
        return self.sketch(images)["embedding"] if modality == "sketch" else self.photo(images)["embedding"]

    def code_logits(self, embedding: jax.Array) -> jax.Array:
        """(B, hash_bits) pre-activations of the hash layer on L2-normalised embeddings."""
        return self.hash(losses.l2_normalise(embedding))

    def prototypes(self) -> jax.Array:
        """(num_classes, embed_dim) class prototypes from the GCN."""
        return gcn.real_nodes(self.class_gcn(self.graph), self.num_classes)

    def __call__(self, batch: dict[str, jax.Array], train: bool = False) -> tuple[jax.Array, dict[str, Any]]:
        sketch = self.sketch(batch["sketch"], train)
        photo = self.photo(batch["photo"], sketch["query"], train)
        out = {
            "sketch": sketch,
            "photo": photo,
            "codes": {
                name: self.code_logits(e)
                for name, e in (
                    ("sketch", sketch["embedding"]),
                    ("photo", photo["guided_embedding"]),
                    ("photo_self", photo["embedding"]),
                )
            },
            "prototypes": self.prototypes(),
        }
        return sketch["embedding"], out


HASH_PHOTO = {"self": "photo_self", "guided": "photo"}  # config.loss.hash_photo -> the photo codes the triplet uses


def _kl_rows(target: jax.Array, predicted: jax.Array) -> jax.Array:
    """Mean over rows of KL(target || predicted) for distributions on the last axis."""
    target, predicted = target.astype(jnp.float32), predicted.astype(jnp.float32)
    return jnp.mean(jnp.sum(target * (jnp.log(target + 1e-12) - jnp.log(predicted + 1e-12)), axis=-1))


def loss_fn(
    model: Model,
    params: Any,
    model_state: Any,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    progress: jax.Array,
    config: Any,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
    """The total CrossATNet loss on one batch of class-matched pairs.

    L = w_tri L_tri + w_self L_tri(self) + w_cls L_cls + w_topo L_topo + w_att L_att
        + w_hash L_tri(codes) + w_quant L_quant + w_balance L_balance.

    Args:
      model: the Model.
      params: its parameters.
      model_state: other collections (backbone BatchNorm statistics, if any).
      batch: {"sketch", "photo", "label"}.
      rng: unused (the model is deterministic).
      progress: training progress in [0, 1], for the hash slope.
      config: the ``config.loss`` section.

    Returns:
      (loss, (model_state, measurements)).
    """
    del rng
    (_, out), updated = model.apply({"params": params, **model_state}, batch, train=True, mutable=["batch_stats"])
    model_state = {**model_state, **updated}
    s, p, labels = out["sketch"], out["photo"], batch["label"]
    seen = jnp.asarray(model.seen_mask)

    def triplet(a: jax.Array, b: jax.Array) -> jax.Array:
        return losses.cross_modal_triplet_loss(
            losses.l2_normalise(a),
            losses.l2_normalise(b),
            labels,
            config.margin,
            metric="cosine",
            mining=config.triplet_mining,
        )

    l_tri = triplet(s["embedding"], p["guided_embedding"])
    l_self = triplet(s["embedding"], p["embedding"])
    protos = out["prototypes"]
    cls_s, logits_s = losses.prototype_cross_entropy(s["embedding"], protos, labels, config.temperature, seen)
    cls_p, logits_p = losses.prototype_cross_entropy(p["guided_embedding"], protos, labels, config.temperature, seen)
    l_cls = 0.5 * (cls_s + cls_p)
    l_topo = losses.topology_loss(protos, jnp.asarray(model.semantic_distance), jnp.asarray(model.graph_mask))
    l_att = _kl_rows(jax.lax.stop_gradient(p["guided_attention"]), p["attention"])

    beta = hashing.slope(progress, config.hash_slope_start, config.hash_slope_end)
    relaxed = {name: jnp.tanh(beta * logits) for name, logits in out["codes"].items()}
    # The gallery's codes come from the self-attended photo at test time: train the codes on that branch ("self"),
    # or on the sketch-guided one ("guided"), which no gallery photo has without a sketch.
    hash_photo = config.get("hash_photo", "guided")  # a run configured before the option trained the guided codes
    if hash_photo not in HASH_PHOTO:
        raise ValueError(f"config.loss.hash_photo={hash_photo!r} is not one of {sorted(HASH_PHOTO)}")
    l_hash = triplet(relaxed["sketch"], relaxed[HASH_PHOTO[hash_photo]])
    l_quant = sum(losses.quantization_loss(h) for h in relaxed.values()) / len(relaxed)
    l_balance = losses.bit_balance_loss(jnp.concatenate([relaxed["sketch"], relaxed["photo_self"]]))
    total = (
        config.w_tri * l_tri
        + config.w_self * l_self
        + config.w_cls * l_cls
        + config.w_topo * l_topo
        + config.w_att * l_att
        + config.w_hash * l_hash
        + config.w_quant * l_quant
        + config.w_balance * l_balance
    )
    codes = hashing.binarise(out["codes"]["sketch"])
    measurements = {
        "loss_tri": l_tri,
        "loss_tri_self": l_self,
        "loss_cls": l_cls,
        "loss_topo": l_topo,
        "loss_att": l_att,
        "loss_hash_tri": l_hash,
        "loss_quant": l_quant,
        "loss_balance": l_balance,
        "hash_slope": beta,
        "code_bit_mean_abs": jnp.mean(jnp.abs(jnp.mean(codes, axis=0))),
        "train_accuracy": 0.5
        * (jnp.mean(jnp.argmax(logits_s, -1) == labels) + jnp.mean(jnp.argmax(logits_p, -1) == labels)),
    }
    return total, (model_state, measurements)


def embed(model: Model, variables: Any, images: jax.Array, modality: str) -> jax.Array:
    """L2-normalised test-time embedding: a sketch's, or a photo's from its own attention (no sketch needed)."""
    return losses.l2_normalise(model.apply(variables, images, modality, method=Model.encode))


def codes(model: Model, variables: Any, images: jax.Array, modality: str) -> jax.Array:
    """(B, hash_bits) +-1 codes: the signs of the hash layer on the test-time embedding."""
    logits = model.apply(variables, images, modality, method=lambda m, x, mod: m.code_logits(m.encode(x, mod)))
    return hashing.binarise(logits)


METHOD = api.Method(
    name="crossatnet",
    Model=Model,
    loss_fn=loss_fn,
    embed=embed,
    codes=codes,
    evaluation=lambda config: api.EvalSpec(views=config.eval.views, codes=True, code_bits=config.model.hash_bits),
)
