"""BDA-SketRet: bi-level domain adaptation for zero-shot SBIR (Chaudhuri et al., Neurocomputing 2022).

docs/methods/bda.md says which parts follow the paper and which are our reading.

What follows the paper's abstract: a CNN per modality; spatial-level alignment of the feature maps by a domain
discriminator trained adversarially with cross-entropy; semantic-level alignment of the pooled features with a
symmetric information-bottleneck loss; a topology-preserving projection of the class semantics into the shared
space; evaluation with 128-d embeddings and cosine ranking.

Our reading (the paper's layer sizes and loss forms are not public):
- The discriminator (two 1x1 convolutions) scores every location of both feature maps through a gradient-reversal
  layer whose lambda follows ``2 / (1 + exp(-gamma p)) - 1`` over training progress p; one optimiser trains all.
- Each modality's head outputs a diagonal Gaussian (mu, log-variance); training samples z by reparameterisation.
  The IB loss is a label-aware InfoNCE between sketch and photo samples (a lower bound of their mutual information)
  plus beta times the symmetrised KL divergence between the two posteriors of each class-matched pair.
- Class prototypes come from a 2-layer GCN over a k-nearest-neighbour class graph of the side-information vectors;
  embeddings (mu) meet seen-class prototypes in a cosine softmax, and a topology term keeps prototype distances
  proportional to semantic distances.
- A cross-modal triplet loss on the L2-normalised mu of both modalities (hard in-batch negatives by default).
- Inference embeds a sketch or a photo as its L2-normalised mu.
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
from jsbir.nn import backbones, gcn, grl


class GaussianHead(nn.Module):
    """Pooled features -> (mu, log-variance) of a diagonal Gaussian.

    Attributes:
      features: the Gaussian's dimension.
      hidden: width of the hidden layer.
      norm: batch-normalise the pooled features first (batch statistics in training, running averages at test).
        Pooled post-ReLU features share one large direction, so without it every embedding starts at nearly the
        same point (mean cosine 0.99 at initialisation) and training first has to escape that collapse.
    """

    features: int
    hidden: int = 256
    norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        if self.norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(nn.Dense(self.hidden)(x))
        mu = nn.Dense(self.features)(x)
        # Start with small variances so early samples stay near mu.
        logvar = nn.Dense(self.features, bias_init=nn.initializers.constant(-4.0))(x)
        return mu, jnp.clip(logvar, -10.0, 5.0)


class Discriminator(nn.Module):
    """Per-location domain classifier on a feature map: a logit that the location comes from a sketch."""

    hidden: int

    @nn.compact
    def __call__(self, fmap: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(fmap))
        return nn.Dense(1)(x)


class Model(nn.Module):
    """The BDA-SketRet network: two backbones, two Gaussian heads, a discriminator and a class GCN.

    Attributes:
      graph: padded class graph whose nodes are the class side-information vectors.
      num_classes: real classes in ``graph``.
      seen_mask: (num_classes,) bool numpy array of the training classes.
      graph_mask: (num_classes,) bool numpy array of the classes the topology term relates (the seen ones unless
        the dataset's semantics are transductive).
      semantic_distance: (num_classes, num_classes) semantic distances for the topology term.
      embed_dim: embedding size.
      backbone: backbone name in ``backbones.BACKBONES``.
      backbone_args: (key, value) pairs passed to the backbone's constructor.
      shared_backbone: one backbone for both modalities.
      gcn_features: hidden widths of the GCN; its output is ``embed_dim``.
      disc_hidden: discriminator width.
      head_norm: batch-normalise the pooled features before the Gaussian heads.
      distill: keep a frozen copy of the (pretrained) backbone, ``teacher_net``, whose ImageNet outputs the
        trained backbones' own classifiers must keep matching (knowledge preservation); needs a backbone with
        ``logits`` (EfficientNet-Lite0).
    """

    graph: jraph.GraphsTuple
    num_classes: int
    seen_mask: np.ndarray
    graph_mask: np.ndarray
    semantic_distance: np.ndarray
    embed_dim: int = 64
    backbone: str = "compact_cnn"
    backbone_args: tuple[tuple[str, Any], ...] = ()
    shared_backbone: bool = False
    gcn_features: tuple[int, ...] = (128,)
    disc_hidden: int = 64
    head_norm: bool = False
    distill: bool = False

    @classmethod
    def from_config(cls, config: Any, info: Any) -> Model:
        """Builds the model from ``config.model`` and the dataset's ``DatasetInfo``."""
        if config.distill and not hasattr(backbones.BACKBONES[config.backbone], "logits"):
            raise ValueError(
                f"config.model.distill needs a backbone with an ImageNet classifier (efficientnet_lite0), "
                f"not {config.backbone!r}"
            )
        return cls(
            graph=gcn.padded_graph(info.class_graph, info.semantics),
            num_classes=info.num_classes,
            seen_mask=info.seen_mask,
            graph_mask=info.graph_mask,
            semantic_distance=info.semantic_distance,
            embed_dim=config.embed_dim,
            backbone=config.backbone,
            backbone_args=tuple(sorted(config.backbone_args.items())),
            shared_backbone=config.shared_backbone,
            gcn_features=tuple(config.gcn_features),
            disc_hidden=config.disc_hidden,
            head_norm=config.head_norm,
            distill=config.distill,
        )

    def setup(self):
        self.sketch_net, self.photo_net = backbones.modality_backbones(
            self.backbone, self.backbone_args, self.shared_backbone
        )
        if self.distill:
            self.teacher_net = backbones.get_backbone(self.backbone, **dict(self.backbone_args))
        self.sketch_head = GaussianHead(self.embed_dim, norm=self.head_norm)
        self.photo_head = GaussianHead(self.embed_dim, norm=self.head_norm)
        self.discriminator = Discriminator(self.disc_hidden)
        self.class_gcn = gcn.GCN(features=(*self.gcn_features, self.embed_dim))

    def encode(self, images: jax.Array, modality: str, train: bool = False) -> dict[str, jax.Array]:
        """Feature map, pooled feature and Gaussian parameters of one modality."""
        net, head = {
            "sketch": (self.sketch_net, self.sketch_head),
            "photo": (self.photo_net, self.photo_head),
        }[modality]
        fmap = net(images, train=train)
        mu, logvar = head(jnp.mean(fmap, axis=(1, 2)), train)
        return {"fmap": fmap, "mu": mu, "logvar": logvar}

    def prototypes(self) -> jax.Array:
        """(num_classes, embed_dim) class prototypes from the GCN."""
        return gcn.real_nodes(self.class_gcn(self.graph), self.num_classes)

    def __call__(
        self, batch: dict[str, jax.Array], train: bool = False, grl_lambda: float = 0.0
    ) -> tuple[jax.Array, dict[str, Any]]:
        out = {}
        for modality in ("sketch", "photo"):
            enc = self.encode(batch[modality], modality, train)
            if self.distill:
                net = self.sketch_net if modality == "sketch" else self.photo_net
                enc["logits"] = net.logits(enc["fmap"])
                enc["teacher_logits"] = self.teacher_net.logits(self.teacher_net(batch[modality]))
            if train:
                eps = jax.random.normal(self.make_rng("sample"), enc["mu"].shape)
                enc["z"] = enc["mu"] + jnp.exp(0.5 * enc["logvar"]) * eps
            else:
                enc["z"] = enc["mu"]
            enc["domain_logits"] = self.discriminator(grl.gradient_reversal(enc["fmap"], grl_lambda))
            out[modality] = enc
        out["prototypes"] = self.prototypes()
        return out["sketch"]["mu"], out


def loss_fn(
    model: Model,
    params: Any,
    model_state: Any,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    progress: jax.Array,
    config: Any,
) -> tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]:
    """The total BDA-SketRet loss on one batch of class-matched pairs.

    L = w_cls L_cls + w_adv L_adv + w_ib L_IB + w_topo L_topo + w_tri L_tri.

    Args:
      model: the Model.
      params: its parameters.
      model_state: other collections (none for this model).
      batch: {"sketch", "photo", "label"}.
      rng: a key for the reparameterisation noise.
      progress: training progress in [0, 1] for the GRL schedule.
      config: the ``config.loss`` section.

    Returns:
      (loss, (model_state, measurements)).
    """
    lam = grl.grl_lambda(progress, gamma=config.grl_gamma, max_value=config.grl_max)
    (_, out), updated = model.apply(
        {"params": params, **model_state},
        batch,
        train=True,
        grl_lambda=lam,
        rngs={"sample": rng},
        mutable=["batch_stats"],
    )
    model_state = {**model_state, **updated}
    s, p, protos = out["sketch"], out["photo"], out["prototypes"]
    labels = batch["label"]
    seen = jnp.asarray(model.seen_mask)

    cls_s, logits_s = losses.prototype_cross_entropy(s["mu"], protos, labels, config.temperature, seen)
    cls_p, logits_p = losses.prototype_cross_entropy(p["mu"], protos, labels, config.temperature, seen)
    l_cls = 0.5 * (cls_s + cls_p)
    domain_logits = jnp.concatenate([s["domain_logits"], p["domain_logits"]])
    is_sketch = jnp.concatenate([jnp.ones(len(labels)), jnp.zeros(len(labels))])
    l_adv = losses.domain_adversarial_loss(domain_logits, is_sketch)
    l_ib, ib_aux = losses.information_bottleneck_loss(
        s["mu"],
        s["logvar"],
        s["z"],
        p["mu"],
        p["logvar"],
        p["z"],
        labels,
        config.ib_beta,
        config.ib_temperature,
    )
    l_topo = losses.topology_loss(protos, jnp.asarray(model.semantic_distance), jnp.asarray(model.graph_mask))
    l_tri = losses.cross_modal_triplet_loss(
        losses.l2_normalise(s["mu"]),
        losses.l2_normalise(p["mu"]),
        labels,
        config.margin,
        metric=config.triplet_metric,
        mining=config.triplet_mining,
    )
    l_kd = 0.0
    if model.distill:
        l_kd = 0.5 * sum(
            losses.distillation_loss(e["logits"], e["teacher_logits"], config.kd_temperature) for e in (s, p)
        )
    total = (
        config.w_kd * l_kd
        + config.w_cls * l_cls
        + config.w_adv * l_adv
        + config.w_ib * l_ib
        + config.w_topo * l_topo
        + config.w_tri * l_tri
    )
    domain_pred = jnp.mean(domain_logits, axis=tuple(range(1, domain_logits.ndim))) > 0
    measurements = {
        "loss_cls": l_cls,
        "loss_kd": l_kd,
        "loss_adv": l_adv,
        "loss_ib": l_ib,
        "loss_topo": l_topo,
        "loss_tri": l_tri,
        "ib_skl": ib_aux["skl"],
        "ib_infonce": ib_aux["infonce"],
        "grl_lambda": lam,
        "domain_accuracy": jnp.mean(domain_pred == (is_sketch > 0)),
        "train_accuracy": 0.5
        * (jnp.mean(jnp.argmax(logits_s, -1) == labels) + jnp.mean(jnp.argmax(logits_p, -1) == labels)),
    }
    return total, (model_state, measurements)


def embed(model: Model, variables: Any, images: jax.Array, modality: str) -> jax.Array:
    """L2-normalised mean embedding (mu) of sketches or photos."""
    enc = model.apply(variables, images, modality, method=Model.encode)
    return losses.l2_normalise(enc["mu"])


def domain_logit(model: Model, variables: Any, images: jax.Array, modality: str) -> jax.Array:
    """(B,) the discriminator's mean logit over each image's feature-map locations that it is a sketch."""

    def logits(m: Model, x: jax.Array) -> jax.Array:
        return jnp.mean(m.discriminator(m.encode(x, modality)["fmap"]), axis=(1, 2, 3))

    return model.apply(variables, images, method=logits)


METHOD = api.Method(
    name="bda",
    Model=Model,
    loss_fn=loss_fn,
    embed=embed,
    rng_streams=("sample",),
    frozen=lambda config: "teacher_net/" if config.model.distill else "",
    evaluation=lambda config: api.EvalSpec(views=config.eval.views),
    domain_logit=domain_logit,
)
