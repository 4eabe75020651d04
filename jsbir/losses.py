"""Every loss of jsbir as a pure function of arrays (no Flax modules, no parameters).

Conventions, shared by all functions here:
- Inputs are cast to float32 first, so a bfloat16 model still gets float32 losses; every loss
  returns a float32 scalar mean unless its docstring says otherwise.
- Masks are applied with `jnp.where`, never boolean indexing, so every function is jit-friendly with
  static shapes; a mean over an empty selection is 0, not NaN.
- Distances: "sqeuclidean", "euclidean" (square root guarded so its gradient is finite at 0) and
  "cosine" (1 - cosine similarity). Pairwise distances use the |a|^2 + |b|^2 - 2ab expansion
  (clipped at 0) to avoid a (Na, Nb, D) intermediate; row-paired distances use the exact difference.

The BDA-SketRet reading these serve (docs/methods/bda.md): `domain_adversarial_loss` (spatial
level), `information_bottleneck_loss` (semantic level), `prototype_cross_entropy` and
`topology_loss` (semantic projection), `cross_modal_triplet_loss`; `quantization_loss` and
`bit_balance_loss` serve the hashing heads (docs/methods/crossatnet.md).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

# Squared norms and distances below this count as 0: keeps sqrt and normalisation gradients finite.
_EPS = 1e-12
# Logit given to excluded classes: exp() of it underflows to exactly 0 in float32.
_MASKED_LOGIT = -1e9


def _f32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _safe_sqrt(x: jax.Array) -> jax.Array:
    # The double where keeps sqrt's infinite slope at 0 out of the backward pass (0 * inf = NaN).
    positive = x > _EPS
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def l2_normalise(x: jax.Array) -> jax.Array:
    """``x`` scaled to unit length along the last axis; a zero vector stays zero with a finite gradient."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _EPS))


def mask_classes(logits: jax.Array, class_mask: jax.Array) -> jax.Array:
    """(B, C) logits with the classes outside ``class_mask`` (C,) set so that softmax gives them exactly 0."""
    return jnp.where(class_mask[None, :], logits, _MASKED_LOGIT)


def _pairwise_sqeuclidean(a: jax.Array, b: jax.Array) -> jax.Array:
    sq = jnp.sum(a * a, axis=-1)[:, None] + jnp.sum(b * b, axis=-1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(sq, 0.0)  # the expansion can round slightly below 0 for equal points.


_PAIRWISE: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "sqeuclidean": _pairwise_sqeuclidean,
    "euclidean": lambda a, b: _safe_sqrt(_pairwise_sqeuclidean(a, b)),
    "cosine": lambda a, b: 1.0 - l2_normalise(a) @ l2_normalise(b).T,
}

_PAIRED: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "sqeuclidean": lambda a, b: jnp.sum((a - b) ** 2, axis=-1),
    "euclidean": lambda a, b: _safe_sqrt(jnp.sum((a - b) ** 2, axis=-1)),
    "cosine": lambda a, b: 1.0 - jnp.sum(l2_normalise(a) * l2_normalise(b), axis=-1),
}


def _check_metric(metric: str) -> None:
    if metric not in _PAIRWISE:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {sorted(_PAIRWISE)}.")


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def pairwise_distance(a: jax.Array, b: jax.Array, metric: str = "sqeuclidean") -> jax.Array:
    """Distances between every row of `a` and every row of `b`.

    Args:
      a: (Na, D) array.
      b: (Nb, D) array.
      metric: "sqeuclidean", "euclidean" or "cosine" (1 - cosine similarity).

    Returns:
      (Na, Nb) float32 distances.
    """
    _check_metric(metric)
    return _PAIRWISE[metric](_f32(a), _f32(b))


def triplet_loss(
    anchor: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
    margin: float,
    metric: str = "sqeuclidean",
) -> jax.Array:
    """Row-wise triplet loss `mean_i max(0, margin + d(a_i, p_i) - d(a_i, n_i))`.

    Args:
      anchor: (B, D) anchors.
      positive: (B, D) positives, row i paired with anchor i.
      negative: (B, D) negatives, row i paired with anchor i.
      margin: the margin m.
      metric: distance, see `pairwise_distance`.

    Returns:
      Scalar mean loss.
    """
    _check_metric(metric)
    anchor, positive, negative = _f32(anchor), _f32(positive), _f32(negative)
    d_pos = _PAIRED[metric](anchor, positive)
    d_neg = _PAIRED[metric](anchor, negative)
    return jnp.mean(jax.nn.relu(margin + d_pos - d_neg))


def _one_direction_triplet(
    dist: jax.Array,
    negative: jax.Array,
    margin: float,
    mining: str,
) -> jax.Array:
    """Rows of `dist` are anchors; the diagonal holds each anchor's positive distance."""
    d_pos = jnp.diagonal(dist)[:, None]
    if mining == "all":
        return _masked_mean(jax.nn.relu(margin + d_pos - dist), negative)
    has_negative = jnp.any(negative, axis=1)
    hardest = jnp.min(jnp.where(negative, dist, jnp.inf), axis=1)
    # Anchors without any negative get a finite placeholder so no inf reaches the arithmetic below.
    hardest = jnp.where(has_negative, hardest, 0.0)
    return _masked_mean(jax.nn.relu(margin + d_pos[:, 0] - hardest), has_negative)


def cross_modal_triplet_loss(
    sketch: jax.Array,
    photo: jax.Array,
    labels: jax.Array,
    margin: float,
    metric: str = "sqeuclidean",
    mining: str = "all",
) -> jax.Array:
    """Symmetric cross-modal triplet loss over a batch of class-matched sketch/photo pairs.

    Row i of `sketch` and row i of `photo` share the class `labels[i]`. With a sketch anchor i the
    positive is photo i and the negatives are the photos j with `labels[j] != labels[i]`; the
    photo-anchor direction mirrors it with sketch negatives. The two directions are averaged.

    Args:
      sketch: (B, D) sketch embeddings.
      photo: (B, D) photo embeddings.
      labels: (B,) integer class labels of the pairs.
      margin: the margin m.
      metric: distance, see `pairwise_distance`.
      mining: "all" averages relu(m + d(s_i, p_i) - d(s_i, p_j)) over every valid (i, j); "hard"
        uses, per anchor, the closest negative and averages over the anchors that have one.

    Returns:
      Scalar loss (0 when no anchor has a negative).
    """
    if mining not in ("all", "hard"):
        raise ValueError(f"Unknown mining {mining!r}; choose one of ['all', 'hard'].")
    dist = pairwise_distance(sketch, photo, metric)  # [i, j] = d(sketch_i, photo_j)
    negative = labels[:, None] != labels[None, :]
    sketch_anchored = _one_direction_triplet(dist, negative, margin, mining)
    photo_anchored = _one_direction_triplet(dist.T, negative.T, margin, mining)
    return 0.5 * (sketch_anchored + photo_anchored)


def gaussian_kl(
    mu_q: jax.Array,
    logvar_q: jax.Array,
    mu_p: jax.Array,
    logvar_p: jax.Array,
) -> jax.Array:
    """KL(N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p))), summed over dimensions.

    Args:
      mu_q, logvar_q: (B, D) mean and log-variance of q.
      mu_p, logvar_p: (B, D) mean and log-variance of p.

    Returns:
      (B,) KL per row, in nats.
    """
    mu_q, logvar_q, mu_p, logvar_p = map(_f32, (mu_q, logvar_q, mu_p, logvar_p))
    ratio = jnp.exp(logvar_q - logvar_p)  # var_q / var_p without forming either variance.
    mahalanobis = (mu_q - mu_p) ** 2 * jnp.exp(-logvar_p)
    return 0.5 * jnp.sum(logvar_p - logvar_q + ratio + mahalanobis - 1.0, axis=-1)


def symmetric_kl(
    mu_q: jax.Array,
    logvar_q: jax.Array,
    mu_p: jax.Array,
    logvar_p: jax.Array,
) -> jax.Array:
    """Symmetrised KL (Jeffreys divergence) `KL(q || p) + KL(p || q)`: the plain sum, NOT halved.

    Args:
      mu_q, logvar_q: (B, D) mean and log-variance of q.
      mu_p, logvar_p: (B, D) mean and log-variance of p.

    Returns:
      (B,) symmetric KL per row, in nats.
    """
    return gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) + gaussian_kl(mu_p, logvar_p, mu_q, logvar_q)


def _contrastive_direction(logits: jax.Array, positive: jax.Array) -> jax.Array:
    log_prob = jax.nn.log_softmax(logits, axis=-1)
    num_positive = jnp.maximum(jnp.sum(positive, axis=-1), 1)
    per_anchor = jnp.sum(jnp.where(positive, log_prob, 0.0), axis=-1) / num_positive
    return -jnp.mean(per_anchor)


def infonce(
    z_a: jax.Array,
    z_b: jax.Array,
    labels: jax.Array | None = None,
    temperature: float = 0.1,
) -> jax.Array:
    """Symmetric InfoNCE between two views, on cosine-similarity logits divided by `temperature`.

    Without labels the positives of anchor i are the diagonal pair (i, i) only: then `log(B) - loss`
    is the InfoNCE lower bound on the mutual information I(z_a; z_b) (van den Oord et al.), in nats.
    With labels every item of the other view with the same label is a positive and the per-anchor
    loss is minus the mean log-softmax probability over its positives (supervised-contrastive
    style); `log(B) - loss` is then only a heuristic score. The a->b (rows) and b->a (columns)
    directions are averaged.

    Args:
      z_a: (B, D) first view.
      z_b: (B, D) second view, row i paired with row i of `z_a`.
      labels: optional (B,) integer labels shared by the pairs.
      temperature: softmax temperature.

    Returns:
      Scalar loss.
    """
    logits = l2_normalise(_f32(z_a)) @ l2_normalise(_f32(z_b)).T / temperature
    if labels is None:
        positive = jnp.eye(logits.shape[0], dtype=bool)
    else:
        positive = labels[:, None] == labels[None, :]
    forward = _contrastive_direction(logits, positive)
    backward = _contrastive_direction(logits.T, positive.T)
    return 0.5 * (forward + backward)


def information_bottleneck_loss(
    mu_s: jax.Array,
    logvar_s: jax.Array,
    z_s: jax.Array,
    mu_p: jax.Array,
    logvar_p: jax.Array,
    z_p: jax.Array,
    labels: jax.Array,
    beta: float,
    temperature: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Multi-view information bottleneck for class-matched sketch/photo pairs (row i with row i).

        loss = infonce(z_s, z_p, labels, temperature)
               + beta * mean_i symmetric_kl(q(z | sketch_i), q(z | photo_i)).

    The label-aware InfoNCE (every same-class pair a positive) stands in for -I_est(z_s; z_p); with several
    positives per anchor it is a contrastive agreement score, not a bound on the mutual information.
    `symmetric_kl` is the undivided sum KL(s||p) + KL(p||s). Sampling z (reparameterisation) is the caller's job.

    Args:
      mu_s, logvar_s: (B, D) sketch posterior parameters.
      z_s: (B, D) sketch samples (reparameterised).
      mu_p, logvar_p: (B, D) photo posterior parameters.
      z_p: (B, D) photo samples.
      labels: (B,) integer class labels of the pairs.
      beta: weight of the symmetric KL.
      temperature: InfoNCE temperature.

    Returns:
      (loss, aux) with aux["infonce"] and aux["skl"] (batch mean).
    """
    contrastive = infonce(z_s, z_p, labels, temperature)
    skl = jnp.mean(symmetric_kl(mu_s, logvar_s, mu_p, logvar_p))
    aux = {"infonce": contrastive, "skl": skl}
    return contrastive + beta * skl, aux


def prototype_cross_entropy(
    embeddings: jax.Array,
    prototypes: jax.Array,
    labels: jax.Array,
    temperature: float = 0.1,
    class_mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy of embeddings against class prototypes, on cosine logits / temperature.

    Args:
      embeddings: (B, D) embeddings.
      prototypes: (C, D) class prototypes (e.g. the GCN output for the real classes).
      labels: (B,) integer labels in [0, C); they must be classes allowed by `class_mask`.
      temperature: softmax temperature.
      class_mask: optional (C,) bool; False classes (e.g. unseen ones) are excluded from the softmax
        by a logit of -1e9.

    Returns:
      (loss, logits): the scalar mean loss and the (B, C) logits as used in the softmax (masked).
    """
    logits = l2_normalise(_f32(embeddings)) @ l2_normalise(_f32(prototypes)).T / temperature
    if class_mask is not None:
        logits = mask_classes(logits, class_mask)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.mean(loss), logits


def topology_loss(
    prototypes: jax.Array,
    semantic_distance: jax.Array,
    mask: jax.Array | None = None,
    pairs: jax.Array | None = None,
) -> jax.Array:
    """Keeps the prototypes' pairwise Euclidean distances proportional to the semantic distances.

    With D_p the prototype distances and D_s the given semantic distances, each divided by its own
    mean over the valid off-diagonal pairs (so only the shape of the configuration counts, not its
    scale), the loss is the mean over those pairs of (D_p / mean(D_p) - D_s / mean(D_s))^2. It is 0
    when the prototypes are any scaled, rotated or translated copy of a configuration whose
    Euclidean distances are the semantic ones.

    Args:
      prototypes: (C, D) class prototypes.
      semantic_distance: (C, C) symmetric semantic distances (e.g. `semantics.semantic_distances`).
      mask: optional (C,) bool; only pairs of True classes take part.
      pairs: optional (C, C) bool; only the True pairs take part (the edges of a class graph).

    Returns:
      Scalar loss (0 when fewer than two classes take part).
    """
    d_p = pairwise_distance(prototypes, prototypes, "euclidean")
    d_s = _f32(semantic_distance)
    num = d_p.shape[0]
    valid = ~jnp.eye(num, dtype=bool)
    if mask is not None:
        valid = valid & mask[:, None] & mask[None, :]
    if pairs is not None:
        valid = valid & pairs
    mean_p = jnp.maximum(_masked_mean(d_p, valid), _EPS)
    mean_s = jnp.maximum(_masked_mean(d_s, valid), _EPS)
    return _masked_mean((d_p / mean_p - d_s / mean_s) ** 2, valid)


def domain_adversarial_loss(logits: jax.Array, is_sketch: jax.Array) -> jax.Array:
    """Per-location sigmoid cross-entropy of a domain discriminator (label 1 = sketch, 0 = photo).

    Args:
      logits: (B, H, W, 1), (B, 1) or (B,) discriminator logits.
      is_sketch: (B,) bool or 0/1 domain labels, broadcast over every location of their row.

    Returns:
      Scalar mean over all locations and the batch.
    """
    logits = _f32(logits)
    labels = _f32(is_sketch).reshape((-1,) + (1,) * (logits.ndim - 1))
    labels = jnp.broadcast_to(labels, logits.shape)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def quantization_loss(h: jax.Array) -> jax.Array:
    """Hashing quantisation loss `mean_i ||h_i - sign(h_i)||^2 / bits`.

    Args:
      h: (B, bits) relaxed codes, typically tanh outputs in (-1, 1).

    Returns:
      Scalar loss; sign(h) carries no gradient, so it pulls h towards the nearest vertex.
    """
    h = _f32(h)
    return jnp.mean(jnp.sum((h - jnp.sign(h)) ** 2, axis=-1) / h.shape[-1])


def bit_balance_loss(h: jax.Array) -> jax.Array:
    """Hashing bit-balance loss `mean_bits (mean_batch h)^2`: each bit +1 for half the batch.

    Args:
      h: (B, bits) relaxed codes.

    Returns:
      Scalar loss.
    """
    return jnp.mean(jnp.mean(_f32(h), axis=0) ** 2)


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 2.0) -> jax.Array:
    """Knowledge preservation: `T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T))` (Hinton et al.).

    Args:
      student_logits: (B, K) logits of the network being trained.
      teacher_logits: (B, K) logits of the frozen network it should keep agreeing with (no gradient flows to it).
      temperature: softmax temperature T; the T^2 factor keeps gradient sizes comparable across T.

    Returns:
      Scalar loss, 0 when the two agree.
    """
    teacher = jax.nn.log_softmax(jax.lax.stop_gradient(_f32(teacher_logits)) / temperature)
    student = jax.nn.log_softmax(_f32(student_logits) / temperature)
    return temperature**2 * jnp.mean(jnp.sum(jnp.exp(teacher) * (teacher - student), axis=-1))
