"""Losses against hand-computed numbers and plain-numpy loop references."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsbir import losses

# Jitted once per shape: on a loaded CPU, eager op-by-op dispatch made these tests much slower.


def _jit(name, *static):
    return jax.jit(getattr(losses, name), static_argnames=static)


J = SimpleNamespace(
    pairwise_distance=_jit("pairwise_distance", "metric"),
    triplet_loss=_jit("triplet_loss", "metric"),
    cross_modal_triplet_loss=_jit("cross_modal_triplet_loss", "metric", "mining"),
    gaussian_kl=_jit("gaussian_kl"),
    symmetric_kl=_jit("symmetric_kl"),
    infonce=_jit("infonce"),
    information_bottleneck_loss=_jit("information_bottleneck_loss"),
    prototype_cross_entropy=_jit("prototype_cross_entropy"),
    topology_loss=_jit("topology_loss"),
    domain_adversarial_loss=_jit("domain_adversarial_loss"),
    quantization_loss=_jit("quantization_loss"),
    bit_balance_loss=_jit("bit_balance_loss"),
)

LOG1P_EXP_M1 = 0.31326168751822286  # log(1 + e^-1) = -log(e / (e + 1))
LOG1P_EXP_M2 = 0.12692801104297250  # log(1 + e^-2)
LOG1P_EXP_P2 = 2.12692801104297270  # log(1 + e^2)


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _np_unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------- distances and triplets


def test_pairwise_distance_hand_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[3.0, 4.0], [0.0, 2.0]])
    sq = [[20.0, 5.0], [13.0, 2.0]]  # (1-3)^2+(0-4)^2, 1^2+2^2, 2^2+3^2, 1^2+1^2
    np.testing.assert_allclose(J.pairwise_distance(a, b), sq, rtol=1e-6)
    np.testing.assert_allclose(J.pairwise_distance(a, b, "euclidean"), np.sqrt(sq), rtol=1e-6)
    # cos = 3/5, 0, 7/(5 sqrt 2), 2/(2 sqrt 2)
    cosine = [[0.4, 1.0], [0.010050506338833531, 0.29289321881345254]]
    np.testing.assert_allclose(J.pairwise_distance(a, b, "cosine"), cosine, atol=1e-6)
    with pytest.raises(ValueError, match="manhattan"):
        losses.pairwise_distance(a, b, "manhattan")


def test_euclidean_gradient_finite_at_zero():
    x = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])
    grad = jax.grad(lambda x: jnp.sum(J.pairwise_distance(x, x, "euclidean")))(x)
    assert np.all(np.isfinite(grad))


def test_triplet_loss_hand_values():
    anchor = np.zeros((2, 2))
    positive = np.array([[1.0, 0.0], [1.0, 0.0]])
    negative = np.array([[2.0, 0.0], [1.0, 1.0]])
    # d(a,p) = 1 both; d(a,n) = 4 -> max(0, 2 + 1 - 4) = 0; d(a,n) = 2 -> 2 + 1 - 2 = 1.
    assert float(J.triplet_loss(anchor[:1], positive[:1], negative[:1], 2.0)) == 0.0
    np.testing.assert_allclose(J.triplet_loss(anchor, positive, negative, 2.0), 0.5)
    # Euclidean: d(a,p) = 5; d(a,n) = 10 -> 0 and d(a,n) = 2 -> 1 + 5 - 2 = 4; mean 2.
    positive = np.array([[3.0, 4.0], [3.0, 4.0]])
    negative = np.array([[6.0, 8.0], [0.0, 2.0]])
    out = J.triplet_loss(anchor, positive, negative, 1.0, metric="euclidean")
    np.testing.assert_allclose(out, 2.0, rtol=1e-6)


def test_cross_modal_triplet_hand_values():
    # D[i, j] = (s_i - p_j)^2 = [[1, 25, 9], [1, 9, 1], [9, 1, 1]], margin 1, all labels distinct.
    sketch = np.array([[0.0], [2.0], [4.0]])
    photo = np.array([[1.0], [5.0], [3.0]])
    labels = np.array([0, 1, 2])
    # all: sketch anchors 0,0 | 9,9 | 0,1 -> 19/6; photo anchors 1,0 | 0,9 | 0,1 -> 11/6; mean 2.5.
    out = J.cross_modal_triplet_loss(sketch, photo, labels, 1.0, mining="all")
    np.testing.assert_allclose(out, 2.5, rtol=1e-6)
    # hard: sketch anchors 0, 9, 1 -> 10/3; photo anchors 1, 9, 1 -> 11/3; mean 3.5.
    out = J.cross_modal_triplet_loss(sketch, photo, labels, 1.0, mining="hard")
    np.testing.assert_allclose(out, 3.5, rtol=1e-6)
    # One class only: no negatives anywhere -> 0 (not NaN).
    out = J.cross_modal_triplet_loss(sketch, photo, np.zeros(3, int), 1.0, mining="hard")
    assert float(out) == 0.0


def _np_cross_modal_triplet(s, p, labels, margin, mining):
    dist = ((s[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    directions = []
    for d in (dist, dist.T):
        terms = []
        for i in range(len(labels)):
            negs = [d[i, j] for j in range(len(labels)) if labels[j] != labels[i]]
            if not negs:
                continue
            if mining == "hard":
                negs = [min(negs)]
            terms += [max(0.0, margin + d[i, i] - n) for n in negs]
        directions.append(np.mean(terms) if terms else 0.0)
    return 0.5 * sum(directions)


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_cross_modal_triplet_matches_loop(mining):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(10, 4)).astype(np.float32)
    p = rng.normal(size=(10, 4)).astype(np.float32)
    labels = np.array([0, 1, 1, 2, 0, 3, 3, 3, 1, 4])
    fn = J.cross_modal_triplet_loss
    out = fn(s, p, labels, 3.0, mining=mining)
    np.testing.assert_allclose(out, _np_cross_modal_triplet(s, p, labels, 3.0, mining), rtol=1e-5)
    if mining == "hard":  # the mining that routes masked entries through +inf
        grad = jax.grad(lambda s: fn(s, p, labels, 3.0, mining=mining))(s)
        assert np.all(np.isfinite(grad)) and np.any(grad != 0)


# ---------------------------------------------------------------- KL and information bottleneck


def test_gaussian_kl_closed_form_1d():
    zero, one = np.zeros((1, 1)), np.ones((1, 1))
    # KL(N(0,1) || N(1,1)) = (0 - 1)^2 / 2 = 0.5
    np.testing.assert_allclose(J.gaussian_kl(zero, zero, one, zero), [0.5], rtol=1e-6)
    # KL(N(0,1) || N(0,e^2)) = 0.5 (2 - 0 + e^-2 - 1); reverse = 0.5 (0 - 2 + e^2 - 1).
    two = 2.0 * one
    np.testing.assert_allclose(J.gaussian_kl(zero, zero, zero, two), [0.5676676], rtol=1e-6)
    np.testing.assert_allclose(J.gaussian_kl(zero, two, zero, zero), [2.1945280], rtol=1e-6)
    # Summed over dimensions: both at once is 0.5 + 0.5676676.
    mu_p, logvar_p = np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])
    out = J.gaussian_kl(np.zeros((1, 2)), np.zeros((1, 2)), mu_p, logvar_p)
    np.testing.assert_allclose(out, [1.0676676], rtol=1e-6)
    # Symmetric KL is the plain sum KL(q||p) + KL(p||q), not halved.
    np.testing.assert_allclose(J.symmetric_kl(zero, zero, one, zero), [1.0], rtol=1e-6)
    np.testing.assert_allclose(J.symmetric_kl(zero, zero, zero, two), [2.7621956], rtol=1e-6)


def test_gaussian_kl_monte_carlo():
    mu_q, var_q, mu_p, var_p = 0.3, 0.5, -0.2, 2.0
    x = np.random.default_rng(1).normal(mu_q, np.sqrt(var_q), size=400_000)

    def log_normal(x, mu, var):
        return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)

    mc = np.mean(log_normal(x, mu_q, var_q) - log_normal(x, mu_p, var_p))
    out = J.gaussian_kl(
        np.array([[mu_q]]), np.log(np.array([[var_q]])), np.array([[mu_p]]),
        np.log(np.array([[var_p]])),
    )  # fmt: skip
    np.testing.assert_allclose(out, [mc], atol=5e-3)


def test_infonce_hand_values():
    z = np.eye(2)
    # Logits = I / T: each row's positive has probability e^(1/T) / (e^(1/T) + 1).
    np.testing.assert_allclose(J.infonce(z, z, temperature=1.0), LOG1P_EXP_M1, rtol=1e-6)
    np.testing.assert_allclose(J.infonce(z, 3 * z, temperature=0.5), LOG1P_EXP_M2, rtol=1e-6)
    # Labels [0, 0]: both columns are positives: mean of -log p = log(1 + e) - 1/2.
    out = J.infonce(z, z, labels=np.array([0, 0]), temperature=1.0)
    np.testing.assert_allclose(out, 0.8132616875182228, rtol=1e-6)


def _np_infonce(a, b, labels, temperature):
    logits = _np_unit(a) @ _np_unit(b).T / temperature
    n = len(a)
    labels = np.arange(n) if labels is None else labels
    total = 0.0
    for lg in (logits, logits.T):
        lp = _np_log_softmax(lg)
        per_anchor = []
        for i in range(n):
            pos = [lp[i, j] for j in range(n) if labels[j] == labels[i]]
            per_anchor.append(-np.mean(pos))
        total += np.mean(per_anchor)
    return total / 2


@pytest.mark.parametrize("with_labels", [False, True])
def test_infonce_matches_loop(with_labels):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(9, 5))
    b = rng.normal(size=(9, 5))
    labels = np.array([0, 1, 2, 0, 1, 3, 3, 4, 0]) if with_labels else None
    out = J.infonce(a.astype(np.float32), b.astype(np.float32), labels, 0.2)
    np.testing.assert_allclose(out, _np_infonce(a, b, labels, 0.2), rtol=1e-5)


def test_information_bottleneck_hand_values():
    z = np.eye(2)
    mu_s, mu_p, logvar = np.zeros((2, 1)), np.array([[1.0], [0.0]]), np.zeros((2, 1))
    loss, aux = J.information_bottleneck_loss(
        mu_s, logvar, z, mu_p, logvar, z, np.array([0, 1]), beta=0.2, temperature=1.0
    )
    # infonce = log(1 + e^-1); symmetric KL per row = [0.5 + 0.5, 0] -> mean 0.5.
    np.testing.assert_allclose(aux["infonce"], LOG1P_EXP_M1, rtol=1e-6)
    np.testing.assert_allclose(aux["skl"], 0.5, rtol=1e-6)
    np.testing.assert_allclose(loss, LOG1P_EXP_M1 + 0.2 * 0.5, rtol=1e-6)


# ---------------------------------------------------------------- prototypes and topology


def test_prototype_cross_entropy_hand_values():
    protos = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    emb = np.array([[2.0, 0.0]])  # cosines [1, 0, -1]
    # Two classes: -log(e / (e + 1)); three: log(1 + e^-1 + e^-2).
    loss, _ = J.prototype_cross_entropy(emb, protos[:2], np.array([0]), temperature=1.0)
    np.testing.assert_allclose(loss, LOG1P_EXP_M1, rtol=1e-6)
    loss, logits = J.prototype_cross_entropy(emb, protos, np.array([0]), temperature=0.5)
    np.testing.assert_allclose(logits, [[2.0, 0.0, -2.0]], atol=1e-6)
    loss, _ = J.prototype_cross_entropy(emb, protos, np.array([0]), temperature=1.0)
    np.testing.assert_allclose(loss, 0.4076059644443804, rtol=1e-6)
    # Masking class 2 out gives back the two-class value.
    mask = np.array([True, True, False])
    loss, logits = J.prototype_cross_entropy(emb, protos, np.array([0]), 1.0, class_mask=mask)
    np.testing.assert_allclose(loss, LOG1P_EXP_M1, rtol=1e-6)
    assert float(logits[0, 2]) <= -1e8


def test_prototype_cross_entropy_matches_numpy():
    rng = np.random.default_rng(3)
    emb, protos = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    labels = np.array([0, 1, 3, 3, 1, 0])
    mask = np.array([True, True, False, True, False])
    logits = _np_unit(emb) @ _np_unit(protos).T / 0.3
    expected = -np.mean(_np_log_softmax(logits[:, mask])[np.arange(6), [0, 1, 2, 2, 1, 0]])
    emb, protos = emb.astype(np.float32), protos.astype(np.float32)
    loss, _ = J.prototype_cross_entropy(emb, protos, labels, 0.3, class_mask=mask)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_topology_loss_hand_value():
    protos = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # distances 1, 1, sqrt(2)
    semantic = 1.0 - np.eye(3)
    # m = (2 + sqrt2) / 3; loss = (2 (1/m - 1)^2 + (sqrt2/m - 1)^2) / 3
    np.testing.assert_allclose(J.topology_loss(protos, semantic), 0.0294372515, rtol=1e-5)


def test_topology_loss_zero_for_scaled_configuration_and_mask():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 3))
    semantic = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    protos = (2.5 * x @ rotation + 7.0).astype(np.float32)
    assert float(J.topology_loss(protos, 4.0 * semantic)) < 1e-6
    # Masked class 5 may sit anywhere: the loss on classes 0..4 only is unchanged.
    moved = protos.copy()
    moved[5] = 100.0
    mask = np.arange(6) < 5
    masked = J.topology_loss(moved, semantic, mask=mask)
    assert float(masked) < 1e-6
    assert float(J.topology_loss(moved, semantic)) > 0.1
    grad = jax.grad(J.topology_loss)(jnp.asarray(protos), semantic)
    assert np.all(np.isfinite(grad))


# ---------------------------------------------------------------- adversarial and hashing


def test_domain_adversarial_hand_values():
    np.testing.assert_allclose(
        J.domain_adversarial_loss(np.zeros((2, 3, 3, 1)), np.array([True, False])),
        np.log(2.0), rtol=1e-6,
    )  # fmt: skip
    # Logit 2 everywhere: label 1 costs log(1 + e^-2), label 0 costs log(1 + e^2).
    expected = (LOG1P_EXP_M2 + LOG1P_EXP_P2) / 2
    for shape in [(2,), (2, 1), (2, 4, 5, 1)]:
        out = J.domain_adversarial_loss(2.0 * np.ones(shape), np.array([1, 0]))
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    # Labels follow their own row: sketch row logit +2, photo row logit -2 -> both cheap.
    logits = np.stack([2.0 * np.ones((3, 3, 1)), -2.0 * np.ones((3, 3, 1))])
    out = J.domain_adversarial_loss(logits, np.array([True, False]))
    np.testing.assert_allclose(out, LOG1P_EXP_M2, rtol=1e-6)
    # Stable for large logits.
    assert np.isfinite(float(J.domain_adversarial_loss(np.array([200.0]), np.array([0]))))


def test_hashing_losses_hand_values():
    h = np.array([[0.5, -0.5], [1.0, -0.2]])
    # rows: (0.25 + 0.25) / 2 = 0.25 and (0 + 0.64) / 2 = 0.32 -> 0.285
    np.testing.assert_allclose(J.quantization_loss(h), 0.285, rtol=1e-6)
    # column means [1, 0] -> mean of squares 0.5
    np.testing.assert_allclose(J.bit_balance_loss(np.array([[1.0, -1.0], [1.0, 1.0]])), 0.5)
    assert float(J.bit_balance_loss(np.array([[0.5, -0.5], [-0.5, 0.5]]))) == 0.0


def test_distillation_hand_values_and_no_gradient_to_the_teacher():
    teacher = np.array([[0.0, np.log(3.0)]])
    student = np.zeros((1, 2))
    # T = 1: KL([.25, .75] || [.5, .5]) = .25 ln .5 + .75 ln 1.5.
    expected = 0.25 * np.log(0.5) + 0.75 * np.log(1.5)
    np.testing.assert_allclose(losses.distillation_loss(student, teacher, 1.0), expected, rtol=1e-5)
    # T = 2 halves the logits and multiplies by 4.
    p = np.exp(teacher[0] / 2) / np.exp(teacher[0] / 2).sum()
    np.testing.assert_allclose(
        losses.distillation_loss(student, teacher, 2.0), 4 * np.sum(p * np.log(p / 0.5)), rtol=1e-5
    )
    assert float(losses.distillation_loss(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-7)
    grad = jax.grad(lambda t: losses.distillation_loss(jnp.zeros((1, 2)), t, 2.0))(jnp.asarray(teacher))
    assert float(jnp.abs(grad).max()) == 0.0
