"""Fast depthwise / pointwise convolutions against ``lax.conv`` and ``nn.Conv``, and the EfficientNet-Lite0 built
on them: outputs, input gradients and kernel gradients equal, parameters laid out as ``nn.Conv`` lays them out."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsbir.nn import conv
from jsbir.nn.backbones import get_backbone
from jsbir.nn.conv import DepthwiseConv, PointwiseConv, depthwise_conv, pointwise_conv
from jsbir.nn.efficientnet import EfficientNetLite, block_specs


def _assert_close(actual, expected, rtol=1e-5):
    """Equal within ``rtol`` of the largest magnitude of ``expected`` (elementwise relative error is meaningless for
    entries that cancel to about zero)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    np.testing.assert_allclose(actual / scale, expected / scale, rtol=0, atol=rtol)


def _value_and_grads(fn, x, w, cotangent):
    """jit(grad) of <fn(x, w), cotangent>: the output, d/dx and d/dw."""

    @jax.jit
    def run(x, w):
        y = fn(x, w)
        grads = jax.grad(lambda x, w: jnp.vdot(fn(x, w), cotangent), argnums=(0, 1))(x, w)
        return y, *grads

    return run(x, w)


def _check_depthwise(batch, height, width, channels, k, stride, padding, monkeypatch=None, seed=0):
    """Shift against lax: output and both gradients; with ``monkeypatch``, through both kernel-gradient loops."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, height, width, channels)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 1, channels)), jnp.float32)
    out_shape = jax.eval_shape(lambda x, w: depthwise_conv(x, w, stride, padding, "lax"), x, w).shape
    cotangent = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
    expected = _value_and_grads(lambda x, w: depthwise_conv(x, w, stride, padding, "lax"), x, w, cotangent)
    # Small maps take the per-image accumulators; forcing the chunked loop, with one-image chunks so that its scan
    # runs several steps whenever batch > 1.
    settings = [{}] if monkeypatch is None else [{}, {"_ACCUMULATE_BYTES": 0, "_CHUNK_BYTES": 1, "_CHUNK_STEPS": 64}]
    for setting in settings:
        for name, value in setting.items():
            monkeypatch.setattr(conv, name, value)
        actual = _value_and_grads(lambda x, w: depthwise_conv(x, w, stride, padding, "shift"), x, w, cotangent)
        for name, a, e in zip(("output", "grad input", "grad kernel"), actual, expected, strict=True):
            assert a.shape == e.shape, name
            _assert_close(a, e)


@pytest.mark.parametrize("stride,k,padding,batch", list(itertools.product((1, 2), (3, 5), ("SAME", "VALID"), (1, 3))))
def test_depthwise_shift_equals_lax(stride, k, padding, batch, monkeypatch):
    # 7 x 8: an odd and an even spatial size in one input; 5 channels: not a multiple of 8.
    _check_depthwise(batch, 7, 8, 5, k, stride, padding, monkeypatch)


@pytest.mark.parametrize("height,k,stride", [(4, 5, 1), (3, 3, 2), (10, 5, 2), (9, 1, 3), (9, 3, 4), (8, 7, 1)])
def test_depthwise_shift_equals_lax_edge_sizes(height, k, stride):
    # A map smaller than the kernel (EfficientNet's 4x4 maps under 5x5 kernels), a 3x3 map at stride 2, a kernel
    # narrower than the stride, stride 4 and k = 7, all with a larger batch under the default kernel-gradient
    # settings.
    _check_depthwise(6, height, height + 1, 12, k, stride, "SAME", seed=1)


def test_depthwise_bfloat16_matches_float32():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 7)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 7)), jnp.bfloat16)
    cotangent = jnp.asarray(rng.standard_normal((2, 3, 3, 7)), jnp.bfloat16)
    actual = _value_and_grads(lambda x, w: depthwise_conv(x, w, 2, impl="shift"), x, w, cotangent)
    f32 = [a.astype(jnp.float32) for a in (x, w, cotangent)]
    expected = _value_and_grads(lambda x, w: depthwise_conv(x, w, 2, impl="lax"), *f32)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == jnp.bfloat16
        _assert_close(a.astype(jnp.float32), e, rtol=2e-2)


def test_kernel_gradient_picks_its_loop_by_map_size(monkeypatch):
    calls = []
    monkeypatch.setattr(conv, "_kernel_grad_accumulate", lambda *a: calls.append("accumulate") or jnp.zeros((3, 3, 8)))
    monkeypatch.setattr(conv, "_kernel_grad_chunked", lambda *a: calls.append("chunked") or jnp.zeros((3, 3, 8)))
    for side in (4, 512):
        x, g = jnp.zeros((2, side, side, 8)), jnp.zeros((2, side, side, 8))
        conv._kernel_grad(x, g, 3, 1, ((1, 1), (1, 1)))
    assert calls == ["accumulate", "chunked"]


def test_chunk_divides_the_batch():
    for batch in (1, 3, 7, 8, 32, 96):
        for image_bytes in (1, 1000, 1 << 20, 1 << 24):
            n = conv._chunk(batch, image_bytes)
            assert batch % n == 0 and 1 <= n <= batch
            assert batch // n <= max(conv._CHUNK_STEPS, 1) or n == batch


def test_auto_picks_shift_on_cpu_and_bad_arguments_raise():
    assert conv._resolve_impl("auto") == "shift"  # the tests run on CPU
    x = jnp.zeros((1, 5, 5, 4))
    with pytest.raises(ValueError):
        depthwise_conv(x, jnp.zeros((3, 3, 1, 4)), impl="cuda")
    with pytest.raises(ValueError):
        depthwise_conv(x, jnp.zeros((3, 3, 1, 4)), padding="CIRCULAR")
    with pytest.raises(ValueError):
        depthwise_conv(x, jnp.zeros((3, 3, 4, 4)))


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_equals_nn_conv(stride):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 7, 6, 12)), jnp.float32)
    reference = nn.Conv(9, (1, 1), strides=stride, use_bias=True)
    variables = reference.init(jax.random.key(0), x)
    fast = PointwiseConv(9, strides=stride, use_bias=True)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)
    cotangent = jnp.asarray(rng.standard_normal(reference.apply(variables, x).shape), jnp.float32)

    def value_and_grads(module):
        def loss(params, x):
            return jnp.vdot(module.apply({"params": params}, x), cotangent)

        return module.apply(variables, x), *jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)

    expected, actual = value_and_grads(reference), value_and_grads(fast)
    jax.tree.map(_assert_close, actual, expected)
    _assert_close(pointwise_conv(x, variables["params"]["kernel"], stride) + variables["params"]["bias"], expected[0])


@pytest.mark.parametrize("k,stride,use_bias", [(3, 1, False), (5, 2, True)])
def test_depthwise_module_is_a_drop_in_for_nn_conv(k, stride, use_bias):
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 9, 9, 6)), jnp.float32)
    reference = nn.Conv(6, (k, k), strides=stride, padding="SAME", feature_group_count=6, use_bias=use_bias)
    variables = reference.init(jax.random.key(0), x)
    fast = DepthwiseConv(k, strides=stride, use_bias=use_bias)
    fast_variables = fast.init(jax.random.key(0), x)
    # Same names, shapes and initial values, so ported weights and checkpoints map unchanged.
    jax.tree.map(np.testing.assert_array_equal, fast_variables, variables)
    if use_bias:
        variables = jax.tree.map(lambda a: a + 0.5, variables)
    _assert_close(fast.apply(variables, x), reference.apply(variables, x))


@pytest.mark.parametrize(
    "height,width,k,stride,padding",
    [(9, 9, 3, 1, "SAME"), (9, 8, 3, 2, "SAME"), (11, 11, 5, 2, "SAME"), (8, 8, 5, 2, "VALID"), (7, 10, 3, 1, "VALID")],
)
def test_im2col_equals_lax_with_gradients(height, width, k, stride, padding):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((3, height, width, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 5, 7)), jnp.float32)
    dims = ("NHWC", "HWIO", "NHWC")

    def reference(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dims)

    expected = reference(x, w)
    _assert_close(conv.im2col_conv(x, w, stride, padding), expected)
    cotangent = jnp.asarray(rng.standard_normal(expected.shape), jnp.float32)
    grads = [jax.grad(lambda x, w, f=f: jnp.vdot(f(x, w), cotangent), argnums=(0, 1))(x, w)
             for f in (reference, lambda x, w: conv.im2col_conv(x, w, stride, padding))]  # fmt: skip
    jax.tree.map(_assert_close, grads[1], grads[0])


def test_conv_module_is_a_drop_in_for_nn_conv_and_falls_back_when_large(monkeypatch):
    x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 12, 12, 4)), jnp.float32)
    reference = nn.Conv(8, (3, 3), strides=2, use_bias=False)
    variables = reference.init(jax.random.key(0), x)
    for impl in ("auto", "shift", "lax"):
        fast = conv.Conv(8, 3, strides=2, impl=impl)
        jax.tree.map(np.testing.assert_array_equal, fast.init(jax.random.key(0), x), variables)
        _assert_close(fast.apply(variables, x), reference.apply(variables, x))

    def uses_lax(impl):
        jaxpr = str(jax.make_jaxpr(conv.Conv(8, 3, strides=2, impl=impl).apply)(variables, x))
        return "conv_general_dilated" in jaxpr

    assert not uses_lax("auto") and uses_lax("lax")
    monkeypatch.setattr(conv, "IM2COL_MAX_BYTES", 1000)  # patches of 2*12*12*4*4*9/4 bytes: too many
    assert uses_lax("auto") and not uses_lax("shift")


def test_efficientnet_shapes_and_parameter_count():
    model = get_backbone("efficientnet_lite0")
    assert isinstance(model, EfficientNetLite) and model.variant == "lite0" and model.channels == 1280
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    assert 4_650_000 <= count <= 4_700_000  # torch efficientnet-lite0: 4,652,008
    for size, side in ((128, 4), (224, 7)):
        out = jax.eval_shape(model.apply, variables, jnp.zeros((2, size, size, 3)))
        assert out.shape == (2, side, side, 1280)
    assert jax.eval_shape(
        lambda v, x: model.apply(v, x, method=model.classify), variables, jnp.zeros((2, 64, 64, 3))
    ).shape == (2, 1000)
    params = variables["params"]
    assert len(block_specs()) == 16 and "expand_conv" not in params["blocks_0"]
    assert params["blocks_1"]["expand_conv"]["kernel"].shape == (1, 1, 16, 96)
    assert params["blocks_15"]["depthwise_conv"]["kernel"].shape == (3, 3, 1, 1152)
    assert params["classifier"]["kernel"].shape == (1280, 1000)
    assert variables["batch_stats"]["head_bn"]["var"].shape == (1280,)
    no_top = EfficientNetLite(classifier_classes=0)
    assert "classifier" not in jax.eval_shape(no_top.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]


@pytest.mark.parametrize(
    "variant, blocks, params, stride16_channels",
    # torch efficientnet-lite1 / -lite2: 5,416,680 / 6,092,072 parameters
    [("lite1", 21, 5_416_680, 112), ("lite2", 21, 6_092_072, 120)],
)
def test_larger_efficientnet_lite_variants(variant, blocks, params, stride16_channels):
    model = get_backbone(f"efficientnet_{variant}")
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert len(block_specs(variant)) == blocks and f"blocks_{blocks - 1}" in variables["params"]
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])) == params
    # Blocks 0-14 end the stride-16 stage: a 225-pixel crop gives 15 x 15, as Lite0's block 10.
    trunk = get_backbone(f"efficientnet_{variant}", num_blocks=15)
    out = jax.eval_shape(lambda: trunk.init_with_output(jax.random.key(0), jnp.zeros((1, 225, 225, 3)))[0])
    assert out.shape == (1, 15, 15, stride16_channels) == (1, 15, 15, trunk.channels)
    with pytest.raises(ValueError, match="num_blocks=22 must be 1 to 21"):
        get_backbone(f"efficientnet_{variant}", num_blocks=22).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="variant 'lite9' is not one of"):
        block_specs("lite9")


def test_efficientnet_batchnorm_is_frozen():
    model = EfficientNetLite(classifier_classes=0)
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    # Random parameters and statistics far from the initial (0, 1), so that normalising with batch statistics
    # would show; filled in from shapes because an eager ``init`` compiles op by op (slow).
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    params = jax.tree.map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), jnp.float32), shapes["params"])
    stats = jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32), shapes["batch_stats"])
    variables = {"params": params, "batch_stats": stats}
    apply = jax.jit(model.apply, static_argnames="train")
    train, evaluate = apply(variables, x, train=True), apply(variables, x, train=False)
    assert train.shape == (2, 1, 1, 1280) and float(jnp.std(train)) > 0
    np.testing.assert_array_equal(np.asarray(train), np.asarray(evaluate))
