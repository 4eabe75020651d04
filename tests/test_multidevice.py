"""Data parallelism changes nothing but speed: the runlocal BDA-SketRet recipe trained for a few steps on one device
and on eight (the same global batch of 32, so 4 rows a device) gives the same losses, norms and parameters.

The train step is jitted over the whole mesh (global view), so batch statistics, the hardest-negative triplet mining
and the InfoNCE terms see the whole batch whatever the device count; only the order of floating-point reductions
differs. With per-device statistics (``pmap`` without a cross-device mean) the curves would part at the first step.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import bda
from jsbir import sharding, train
from jsbir.data import get_dataset, pipeline
from jsbir.methods import get_method

STEPS = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = bda.get_config("runlocal")
    config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    data = get_dataset(config.data)
    method = get_method(config.method)
    model = method.Model.from_config(config.model, data.info)
    return config, data, method, model


def _train(setup, devices: list[jax.Device]) -> tuple[list[dict[str, float]], dict]:
    """``STEPS`` steps of the runlocal recipe on a mesh over ``devices``; the logged values and the last params."""
    config, data, method, model = setup
    inputs = method.inputs(config)
    sketches, photos = data.training_pairs()
    example = pipeline.example_batch(inputs.sampler, inputs.preprocess, sketches.image.shape[1:])
    mesh = sharding.make_mesh(devices)
    state = train.StateFactory(method, model, config, example, mesh).build("scratch", None, {})
    step = train.make_train_step(method, model, config.loss, config.train.steps)
    batches = train.training_batches(config, inputs, sketches, photos)
    rng = train.training_rng(config)
    logged = []
    for _ in range(STEPS):
        batch = sharding.to_global(next(batches), mesh)
        assert len(batch["sketch"].sharding.device_set) == len(devices)
        state, measurements = step(state, batch, rng)
        logged.append({k: float(v) for k, v in jax.device_get(measurements).items()})
    return logged, jax.device_get(state.params)


def test_one_device_and_eight_devices_train_the_same_model(setup):
    assert jax.device_count() == 8
    one, params_one = _train(setup, jax.devices()[:1])
    eight, params_eight = _train(setup, jax.devices())
    losses = np.array([row["loss"] for row in one])
    assert np.all(np.isfinite(losses)) and len(set(np.round(losses, 4))) == STEPS, losses  # it trains
    for key in ("loss", "grad_norm", "param_norm", "loss_cls", "loss_tri", "loss_ib", "loss_adv"):
        a, b = [row[key] for row in one], [row[key] for row in eight]
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-5, err_msg=key)
    # Batch norm in the heads: the statistics of the global batch of 32, on one device or split over eight. Adam
    # divides by the root of the squared gradient, so a weight whose gradient is near zero turns a rounding
    # difference into a visible one: 99% of the weights agree to 1e-5, and none by more than one learning-rate step.
    lr = setup[0].train.lr
    flat = jax.tree_util.tree_flatten_with_path(params_one)[0]
    close = total = 0
    for (path, a), b in zip(flat, jax.tree.leaves(params_eight), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=lr, err_msg=jax.tree_util.keystr(path))
        close, total = close + np.sum(np.abs(b - a) <= 1e-5 + 1e-4 * np.abs(a)), total + a.size
    assert close / total > 0.99, (close, total)  # 99.8% measured
