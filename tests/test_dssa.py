"""DSSA: HOLEF against its definition and the squared-Euclidean triplet, its gradient with respect to W by hand, the
spatial attention's mask and residual form, Sketch-a-Net's map sizes, and multi-view score averaging by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import dssa as dssa_config
from jsbir.methods import dssa
from jsbir.nn.attention import SpatialAttention
from jsbir.nn.backbones import CompactCNN
from jsbir.nn.sketch_a_net import GRAY_MEAN, SketchANet


def _loss_config(kind: str, margin: float = 0.3, alpha: float = 0.0, beta: float = 0.0, negatives: str = "sampled"):
    return ml_collections.ConfigDict(
        {"kind": kind, "margin": margin, "alpha": alpha, "beta": beta, "negatives": negatives}
    )


def test_holef_distance_is_its_definition():
    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(3, 4)), rng.normal(size=(5, 4)), rng.normal(size=(4, 4))
    brute = np.array([[np.sum(w * (xa[:, None] - yb[None, :]) ** 2) for yb in y] for xa in x])
    np.testing.assert_allclose(dssa.holef_distance(x, y, w), brute, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dssa.holef_paired(x[:3], y[:3], w), np.diag(brute[:, :3]), rtol=1e-5, atol=1e-5)
    # W = I: the squared Euclidean distance.
    np.testing.assert_allclose(
        dssa.holef_distance(x, y, np.eye(4)), ((x[:, None] - y[None]) ** 2).sum(-1), rtol=1e-5, atol=1e-5
    )


def test_holef_with_identity_equals_the_squared_euclidean_triplet():
    rng = np.random.default_rng(1)
    s, p, n = (rng.normal(size=(6, 8)).astype(np.float32) for _ in range(3))
    holef, penalty = dssa.triplet_objective(s, p, n, jnp.eye(8), _loss_config("holef2", beta=1.0))
    triplet, none = dssa.triplet_objective(s, p, n, jnp.zeros((8, 8)), _loss_config("triplet"))
    expected = np.mean(np.maximum(0, 0.3 + ((s - p) ** 2).sum(1) - ((s - n) ** 2).sum(1)))
    np.testing.assert_allclose(holef, expected, rtol=1e-5)
    np.testing.assert_allclose(triplet, expected, rtol=1e-5)  # "triplet" ignores W
    assert float(penalty) == 0.0 and float(none) == 0.0


def test_holef_gradient_with_respect_to_w_by_hand():
    # One triplet, active: s = (1, 0), p = (0, 1), n = (2, 2). dD_W(x, y)/dW_ij = (x_i - y_j)^2, so
    # dL/dW_ij = (s_i - p_j)^2 - (s_i - n_j)^2 + 2 beta (W - I)_ij; at W = I the penalty's gradient is 0.
    s, p, n = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]]), jnp.array([[2.0, 2.0]])
    config = _loss_config("holef2", margin=10.0, beta=0.5)

    def total(w):
        term, penalty = dssa.triplet_objective(s, p, n, w, config)
        return term + penalty

    grad = jax.grad(total)(jnp.eye(2))
    expected = np.array([[1 - 1, 0 - 1], [0 - 4, 1 - 4]], float)  # (s_i - p_j)^2 - (s_i - n_j)^2
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    # Off the identity the L2 penalty adds 2 beta (W - I); the L1 one adds alpha sign(W - I).
    w = jnp.array([[1.5, 0.2], [-0.5, 0.7]])  # every entry off the identity (|x| has no derivative at 0)
    term_only = jax.grad(lambda v: dssa.triplet_objective(s, p, n, v, config)[0])(w)
    np.testing.assert_allclose(jax.grad(total)(w) - term_only, 2 * 0.5 * (np.asarray(w) - np.eye(2)), atol=1e-6)
    l1 = _loss_config("holef1", margin=10.0, alpha=0.25)
    penalty_grad = jax.grad(lambda v: dssa.triplet_objective(s, p, n, v, l1)[1])(w)
    np.testing.assert_allclose(penalty_grad, 0.25 * np.sign(np.asarray(w) - np.eye(2)), atol=1e-6)
    with pytest.raises(ValueError, match=r"config.loss.kind='nope' is not one of"):
        dssa.triplet_objective(s, p, n, w, _loss_config("nope"))


def test_batch_negatives_by_hand_skip_the_sketch_own_photo():
    # Squared Euclidean on 1-d embeddings, margin 5. Photos (row): p0 = 1 (0), p1 = 8 (1), n0 = 9.5 (1: sketch 0's
    # negative is sketch 1's own photo), n1 = 2 (2). Sketch 0 (s = 0, d_pos 1) meets p1, n0, n1 at 64, 90.25, 4;
    # sketch 1 (s = 10, d_pos 4) meets p0 and n1 at 81 and 64, never n0 (its own photo, 0.25 away).
    s, p, n = (jnp.array(v)[:, None] for v in ([0.0, 10.0], [1.0, 8.0], [9.5, 2.0]))
    rows = (jnp.array([0, 1]), jnp.array([1, 2]))
    w = jnp.eye(1)

    def term(negatives):
        return float(dssa.triplet_objective(s, p, n, w, _loss_config("triplet", 5.0, negatives=negatives), rows)[0])

    assert term("sampled") == 0.0  # 5 + 1 - 90.25 and 5 + 4 - 64 are both negative
    assert term("batch_hard") == pytest.approx((5 + 1 - 4 + 0) / 2)  # sketch 0's closest is n1
    assert term("batch_all") == pytest.approx(2 / 5)  # one active pair of the five allowed
    with pytest.raises(ValueError, match=r"config.loss.negatives='nope' is not one of"):
        term("nope")


def test_spatial_attention_mask_sums_to_one_and_the_residual_holds():
    f = jax.random.normal(jax.random.key(0), (2, 5, 4, 7))
    module = SpatialAttention(hidden=3)
    variables = module.init(jax.random.key(1), f)
    attended, mask = module.apply(variables, f)
    assert mask.shape == (2, 5, 4) and (np.asarray(mask) > 0).all()
    np.testing.assert_allclose(np.asarray(mask).sum(axis=(1, 2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(attended, f + f * mask[..., None], rtol=1e-6)
    # The mask is the softmax over positions of the two 1x1 convolutions' score.
    p = variables["params"]
    scores = np.maximum(np.asarray(f) @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0) @ p["score"]["kernel"]
    scores = (scores[..., 0] + p["score"]["bias"][0]).reshape(2, -1)
    expected = np.exp(scores - scores.max(1, keepdims=True))
    np.testing.assert_allclose(mask.reshape(2, -1), expected / expected.sum(1, keepdims=True), rtol=1e-5)


def test_sketch_a_net_map_of_a_225_pixel_crop_is_15_by_15():
    shapes = jax.eval_shape(
        lambda x: SketchANet().init_with_output(jax.random.key(0), x)[0],
        jax.ShapeDtypeStruct((1, 225, 225, 1), jnp.float32),
    )
    assert shapes.shape == (1, 15, 15, 256)


def test_model_embeds_one_channel_crops_and_scores_with_w():
    config = dssa_config.get_config("runlocal,backbone=sketch_a_net")
    assert config.data.image_size == 112  # Sketch-a-Net's valid convolutions need about 100 pixels
    model = dssa.Model.from_config(config.model, None)
    x = jax.random.normal(jax.random.key(0), (3, 98, 98, 1)) * 50

    @jax.jit  # one compilation: op by op, the 15 x 15 convolutions' first calls cost about a minute on 2 cores
    def init_and_embed(x):
        variables = model.init(jax.random.key(1), {"sketch": x, "photo": x, "negative": x})
        return variables, dssa.embed(model, variables, x, "photo")

    variables, e = init_and_embed(x)
    assert e.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    # W = I at init: the score is minus the squared distance, 2 - 2 cos for unit vectors.
    np.testing.assert_allclose(dssa.score(model, variables, e, e), -(2 - 2 * np.asarray(e @ e.T)), atol=1e-5)
    assert dssa.METHOD.freeze_pattern(config) == "" and config.loss.kind == "holef2"
    triplet = dssa_config.get_config("runlocal,backbone=sketch_a_net,loss=triplet")
    assert dssa.METHOD.freeze_pattern(triplet) == "^holef$"  # the plain triplet never touches W


def test_grid_sum_by_hand():
    # A 3 x 4 map of one channel, 2 x 2 grid: numpy.array_split gives rows [0, 1] | [2] and columns [0, 1] | [2, 3].
    f = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1) + 1.0
    f2 = np.concatenate([f, -f], -1)  # two channels: each cell's (s, -s) normalises to (1, -1) / sqrt(2)
    cells = np.asarray(dssa.grid_sum(jnp.asarray(f2), 2)).reshape(4, 2)
    np.testing.assert_allclose(cells, np.tile([[1.0, -1.0]], (4, 1)) / np.sqrt(2), rtol=1e-6)
    one = np.asarray(dssa.grid_sum(jnp.asarray(f), 2))[0]  # one channel: every cell normalises to 1
    np.testing.assert_allclose(one, [1.0, 1.0, 1.0, 1.0], rtol=1e-6)
    mixed = np.concatenate([f, np.ones_like(f)], -1)
    sums = [(1 + 2 + 5 + 6, 4), (3 + 4 + 7 + 8, 4), (9 + 10, 2), (11 + 12, 2)]  # (channel 0, channel 1) per cell
    expected = np.concatenate([np.array(s, np.float32) / np.hypot(*s) for s in sums])
    np.testing.assert_allclose(np.asarray(dssa.grid_sum(jnp.asarray(mixed), 2))[0], expected, rtol=1e-6)
    whole = np.asarray(dssa.grid_sum(jnp.asarray(mixed), 1))[0]
    np.testing.assert_allclose(whole, np.array([78.0, 12.0]) / np.hypot(78.0, 12.0), rtol=1e-6)
    with pytest.raises(ValueError, match="fine_grid=4 needs a map of at least 4 x 4, got 3 x 4"):
        dssa.grid_sum(jnp.asarray(f), 4)


def test_unreduced_map_is_the_backbone_map_over_the_grid():
    # reduce_map=False, no attention: the embedding is the backbone's own map pooled over the grid, each cell
    # L2-normalised, nothing trainable but the backbone (a 16-channel compact CNN over a 2 x 2 grid: 64-d).
    args = {"width": 8, "stages": 1}
    kwargs = {"backbone": "compact_cnn", "backbone_args": tuple(args.items()), "attention": False, "branches": "fine"}
    model = dssa.Model(**kwargs, fine_grid=2, embed_dim=64, reduce_map=False)
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1), minval=-GRAY_MEAN, maxval=255.0 - GRAY_MEAN)
    variables = model.init(jax.random.key(1), {"sketch": x})
    assert sorted(variables["params"]) == ["holef", "shared_net"]

    fmap = CompactCNN(**args).apply(
        {"params": variables["params"]["shared_net"]}, jnp.repeat((x + GRAY_MEAN) / 127.5 - 1.0, 3, axis=-1)
    )
    cells = [fmap[:, i * 4 : i * 4 + 4, j * 4 : j * 4 + 4].sum((1, 2)) for i in range(2) for j in range(2)]
    expected = np.concatenate([c / np.linalg.norm(c, axis=-1, keepdims=True) for c in map(np.asarray, cells)], -1) / 2
    np.testing.assert_allclose(np.asarray(dssa.embed(model, variables, x, "sketch")), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"must be 4 cells of the map's channels \(compact_cnn's 16\)"):
        dssa.Model(**kwargs, fine_grid=2, embed_dim=128, reduce_map=False).init(jax.random.key(1), {"sketch": x})


@pytest.mark.parametrize(("branches", "grid", "dim"), [("coarse+fine", 1, 512), ("coarse", 1, 512), ("fine", 2, 1024)])
def test_branches_set_the_embedding_and_w_sizes(branches, grid, dim):
    config = dssa_config.get_config("runlocal,backbone=sketch_a_net")
    config.unlock()
    config.model.branches, config.model.fine_grid, config.model.embed_dim = branches, grid, dim
    model = dssa.Model.from_config(config.model, None)
    x = jax.random.normal(jax.random.key(0), (2, 98, 98, 1)) * 50
    init = lambda: model.init(jax.random.key(1), {"sketch": x, "photo": x, "negative": x})  # noqa: E731
    variables = jax.eval_shape(init)
    embedding = jax.eval_shape(lambda: dssa.embed(model, init(), x, "photo"))
    assert embedding.shape == (2, dim) and variables["params"]["holef"].shape == (dim, dim)
    assert ("fc6" in variables["params"]) == (branches != "fine")


def test_embed_dim_must_split_into_the_grid_cells():
    x = jnp.zeros((1, 98, 98, 1))
    model = dssa.Model(backbone="sketch_a_net", branches="fine", fine_grid=2, embed_dim=512)
    with pytest.raises(ValueError, match="fine branch's 512 dimensions must be 4 cells of the map's channels"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), {"sketch": x}))
