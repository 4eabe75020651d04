"""Depthwise, pointwise and dense convolutions that run fast on XLA:CPU, as drop-in replacements for ``nn.Conv``.

XLA:CPU lowers grouped (``feature_group_count``) convolutions to a slow generic loop, worst for the kernel
gradient (jax-ml/jax #13800, #23713; openxla/xla #34273). A depthwise convolution is only k*k per-channel
multiply-adds, so here it is written as k*k shifted slices of the padded input times a per-channel weight, with a
``jax.custom_vjp`` whose backward pass uses the same trick: the input gradient is, per phase of the stride, a
shifted sum over the padded output gradient with part of the flipped kernel, and the kernel gradient sums
window(i, j) * output gradient over batch and space per tap, walking the batch with ``lax.scan`` so each image is
done while in cache.
A 1x1 convolution is a matrix product, which XLA:CPU runs 3-8x faster as a dot than as a convolution. A dense k x k
convolution is one matrix product over the k*k shifted copies of the input laid side by side (im2col), whose
gradients XLA:CPU also computes as products: 2-3x faster than ``lax.conv`` for the compact CNN's layers.
benchmarks/README.md has the figures and the formulations tried.

Layouts follow ``flax.linen.Conv``: NHWC inputs, a depthwise kernel of shape (k, k, 1, C), a pointwise kernel of
shape (1, 1, Cin, Cout), so weights ported for ``nn.Conv`` load unchanged.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "lax", "shift")


def _resolve_impl(impl: str) -> str:
    """Picks the implementation for the current default backend.

    On CPU the shifted multiply-adds are 10-100x faster than ``lax.conv`` (see benchmarks/README.md). No GPU or TPU
    was available when this was measured, so accelerators keep ``lax.conv``, which cuDNN and the TPU compiler
    handle natively (though jax-ml/jax #13800 reports a slow depthwise backward on GPU too); change this only with
    a measurement: ``python benchmarks/train_step.py --layer depthwise`` on the accelerator.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
    if impl == "auto":
        return "shift" if jax.default_backend() == "cpu" else "lax"
    return impl


def _same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    """XLA/TensorFlow "SAME" padding for one spatial dimension: the odd pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _pads(shape: tuple[int, ...], k: int, stride: int, padding: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(low, high) padding of the H and W dimensions of an NHWC ``shape``."""
    if padding == "SAME":
        return _same_pads(shape[1], k, stride), _same_pads(shape[2], k, stride)
    if padding == "VALID":
        return (0, 0), (0, 0)
    raise ValueError(f"padding={padding!r} must be 'SAME' or 'VALID'")


def _out_size(size: int, k: int, stride: int, pads: tuple[int, int]) -> int:
    return (size + pads[0] + pads[1] - k) // stride + 1


def _pad_hw(x: jax.Array, ph: tuple[int, int], pw: tuple[int, int]) -> jax.Array:
    """Pads with zeros (negative values crop) the H and W dimensions of an NHWC array."""
    return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (ph[0], ph[1], 0), (pw[0], pw[1], 0), (0, 0, 0)))


def _tap(xp: jax.Array, i: int, j: int, oh: int, ow: int, stride: int) -> jax.Array:
    """The (oh, ow) window of padded input that tap (i, j) of the kernel sees, subsampled by ``stride``."""
    return lax.slice(
        xp,
        (0, i, j, 0),
        (xp.shape[0], i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, xp.shape[3]),
        (1, stride, stride, 1),
    )


def _shift_sum(xp: jax.Array, w: jax.Array, oh: int, ow: int, stride: int) -> jax.Array:
    """sum_{i,j} window(i, j) * w[i, j]: a depthwise correlation of the already padded ``xp`` with ``w`` (k, k, C).

    Accumulates in float32 (or wider) and returns ``xp``'s dtype, so bfloat16 inputs lose no precision in the sum.
    """
    k = w.shape[0]
    dtype = jnp.promote_types(xp.dtype, jnp.float32)
    acc = None
    for i in range(k):
        for j in range(k):
            term = _tap(xp, i, j, oh, ow, stride).astype(dtype) * w[i, j].astype(dtype)
            acc = term if acc is None else acc + term
    return acc.astype(xp.dtype)


def _chunk(batch: int, image_bytes: int) -> int:
    """Images per step of the chunked kernel-gradient loop: at most about ``_CHUNK_STEPS`` steps (each step costs
    two dispatched ops per tap, which dominate when chunks are small), chunks of at least ``_CHUNK_BYTES`` when the
    batch allows (so that a chunk's taps are reduced while it sits in cache)."""
    want = max(-(-batch // _CHUNK_STEPS), min(batch, _CHUNK_BYTES // max(image_bytes, 1)))
    return min(d for d in range(max(want, 1), batch + 1) if batch % d == 0)


_CHUNK_STEPS = 8
_CHUNK_BYTES = 1 << 20
# Output gradients of at most this many bytes per image take the per-image accumulators of
# _kernel_grad_accumulate; larger ones the chunked reductions of _kernel_grad_chunked (measured crossover).
_ACCUMULATE_BYTES = 320 << 10


def _kernel_grad(x: jax.Array, g: jax.Array, k: int, stride: int, pads) -> jax.Array:
    """d(loss)/d(kernel) of shape (k, k, C): per tap, the sum over batch and space of window(i, j) * g, in float32.

    Both formulations walk the batch with ``lax.scan`` so that the taps of one image (or a few) are done while it
    sits in cache; over the whole batch at once, each tap streams the input from memory again and XLA:CPU copies
    each shifted window, which is 3-5x slower (see benchmarks/README.md for the formulations measured).
    """
    b, oh, ow, c = g.shape
    if oh * ow * c * 4 <= _ACCUMULATE_BYTES:
        return _kernel_grad_accumulate(x, g, k, stride, pads)
    return _kernel_grad_chunked(x, g, k, stride, pads)


def _kernel_grad_accumulate(x: jax.Array, g: jax.Array, k: int, stride: int, pads) -> jax.Array:
    """One image per step; k*k float32 accumulators of the output's size gather window(i, j) * g by elementwise
    multiply-adds (no reductions inside the loop), reduced over space once at the end. Fastest for small maps."""
    b, oh, ow, c = g.shape
    taps = [(i, j) for i in range(k) for j in range(k)]

    def step(acc, image):
        xi, gi = image
        xp = _pad_hw(xi[None], *pads)
        gi = gi.astype(jnp.float32)
        return tuple(
            a + _tap(xp, i, j, oh, ow, stride)[0].astype(jnp.float32) * gi for a, (i, j) in zip(acc, taps, strict=True)
        ), None

    acc = lax.scan(step, tuple(jnp.zeros((oh, ow, c), jnp.float32) for _ in taps), (x, g))[0]
    return jnp.stack([jnp.sum(a, axis=(0, 1)) for a in acc]).reshape(k, k, c)


def _kernel_grad_chunked(x: jax.Array, g: jax.Array, k: int, stride: int, pads) -> jax.Array:
    """A few images per step (see ``_chunk``); per tap, one reduction of window(i, j) * g over the chunk."""
    b, oh, ow, c = g.shape
    (ph, pw), (h, w) = pads, x.shape[1:3]
    n = _chunk(b, (h + ph[0] + ph[1]) * (w + pw[0] + pw[1]) * c * x.dtype.itemsize)
    xs = x.reshape(b // n, n, *x.shape[1:])
    gs = g.reshape(b // n, n, *g.shape[1:])

    def step(acc, chunk):
        xc, gc = chunk
        xp = _pad_hw(xc, ph, pw)
        gc = gc.astype(jnp.float32)
        taps = [
            jnp.sum(_tap(xp, i, j, oh, ow, stride).astype(jnp.float32) * gc, axis=(0, 1, 2))
            for i in range(k)
            for j in range(k)
        ]
        return acc + jnp.stack(taps).reshape(k, k, c), None

    return lax.scan(step, jnp.zeros((k, k, c), jnp.float32), (xs, gs))[0]


def _input_grad(g: jax.Array, w: jax.Array, x_shape: tuple[int, ...], stride: int, pads) -> jax.Array:
    """d(loss)/d(input), by phases of the stride (polyphase), each a stride-1 shifted sum over the output gradient.

    Padded-input row a = stride * q + r receives g[q - m] * w[r + stride * m] for every m, so the rows of one phase
    r (and likewise column phase t) are a stride-1 correlation of the output gradient with the sub-kernel
    w[r::stride, t::stride]. Summing over a zero-dilated output gradient instead does stride**2 times the work
    (2.5-4x slower at stride 2). The phases are interleaved and cropped to the input's rows and columns.
    """
    k = w.shape[0]
    b, oh, ow, c = g.shape
    (ph, pw), (h, wd) = pads, x_shape[1:3]
    taps = -(-k // stride)  # most taps of a phase, per dimension

    def span(lo: int, size: int, out: int) -> tuple[int, int, tuple[int, int]]:
        # Phase rows q in [q0, q0 + n) cover padded rows [lo, lo + size); the output gradient is padded (negative
        # values crop) so that slice start taps - 1 - m of the padded gradient reads g[q0 - m].
        q0, q1 = lo // stride, -(-(lo + size) // stride)
        return q0, q1 - q0, (taps - 1 - q0, q1 - out)

    qh0, nh, pad_h = span(ph[0], h, oh)
    qw0, nw, pad_w = span(pw[0], wd, ow)
    gp = _pad_hw(g, pad_h, pad_w)
    dtype = jnp.promote_types(g.dtype, jnp.float32)
    phases = []
    for r in range(stride):
        row = []
        for t in range(stride):
            acc = None
            for m in range(len(range(r, k, stride))):
                for n in range(len(range(t, k, stride))):
                    start = (0, taps - 1 - m, taps - 1 - n, 0)
                    window = lax.slice(gp, start, (b, start[1] + nh, start[2] + nw, c))
                    term = window.astype(dtype) * w[r + stride * m, t + stride * n].astype(dtype)
                    acc = term if acc is None else acc + term
            row.append(jnp.zeros((b, nh, nw, c), dtype) if acc is None else acc)  # None: kernel narrower than stride
        phases.append(row)
    if stride == 1:
        full = phases[0][0]
    else:  # (B, nh, stride, nw, stride, C): row stride * q + r, column stride * q' + t
        full = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2).reshape(b, nh * stride, nw * stride, c)
    dh, dw = ph[0] - stride * qh0, pw[0] - stride * qw0
    return lax.slice(full, (0, dh, dw, 0), (b, dh + h, dw + wd, c)).astype(g.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_shift(x: jax.Array, kernel: jax.Array, stride: int, padding: str) -> jax.Array:
    return _depthwise_shift_fwd(x, kernel, stride, padding)[0]


def _depthwise_shift_fwd(x, kernel, stride, padding):
    k = kernel.shape[0]
    ph, pw = _pads(x.shape, k, stride, padding)
    oh, ow = _out_size(x.shape[1], k, stride, ph), _out_size(x.shape[2], k, stride, pw)
    xp = _pad_hw(x, ph, pw)
    y = _shift_sum(xp, kernel[:, :, 0, :], oh, ow, stride)
    return y, (x, kernel)


def _depthwise_shift_bwd(stride, padding, res, g):
    x, kernel = res
    k = kernel.shape[0]
    ph, pw = _pads(x.shape, k, stride, padding)
    dx = _input_grad(g, kernel[:, :, 0, :], x.shape, stride, (ph, pw))
    dw = _kernel_grad(x, g, k, stride, (ph, pw))
    return dx.astype(x.dtype), dw[:, :, None, :].astype(kernel.dtype)


_depthwise_shift.defvjp(_depthwise_shift_fwd, _depthwise_shift_bwd)


def depthwise_conv(
    x: jax.Array, kernel: jax.Array, strides: int = 1, padding: str = "SAME", impl: str = "auto"
) -> jax.Array:
    """Depthwise 2-D convolution (cross-correlation, as ``nn.Conv`` with ``feature_group_count=C``).

    Args:
      x: (B, H, W, C) input.
      kernel: (k, k, 1, C) kernel, the layout of ``nn.Conv(C, (k, k), feature_group_count=C)``; any k.
      strides: 1 or 2 (any positive stride works).
      padding: "SAME" (XLA/TensorFlow semantics: for stride 2 the extra pixel is padded bottom/right) or "VALID".
      impl: "lax" (``lax.conv_general_dilated``), "shift" (shifted multiply-adds with a custom VJP, fast on CPU)
        or "auto" (shift on CPU, lax elsewhere). "shift" is a ``jax.custom_vjp``: reverse-mode gradients (grad,
        vjp) under jit and vmap work, forward mode (``jax.jvp``, ``jax.jacfwd``) does not.

    Returns:
      (B, H', W', C) output, H' = ceil(H / strides) for SAME and (H - k) // strides + 1 for VALID.
    """
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[2] != 1:
        raise ValueError(f"kernel shape {kernel.shape} is not (k, k, 1, C)")
    if kernel.shape[3] != x.shape[3]:
        raise ValueError(f"kernel has {kernel.shape[3]} channels, input {x.shape[3]}")
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"padding={padding!r} must be 'SAME' or 'VALID'")
    if _resolve_impl(impl) == "lax":
        return lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(strides, strides),
            padding=padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=x.shape[3],
        )
    return _depthwise_shift(x, kernel, int(strides), padding)


def pointwise_conv(x: jax.Array, kernel: jax.Array, strides: int = 1) -> jax.Array:
    """1x1 convolution as a matrix product.

    Args:
      x: (B, H, W, Cin) input.
      kernel: (1, 1, Cin, Cout) kernel, the layout of ``nn.Conv(Cout, (1, 1))``.
      strides: spatial stride; a 1x1 "SAME" convolution with stride s reads pixels 0, s, 2s, ...

    Returns:
      (B, ceil(H / strides), ceil(W / strides), Cout) output.
    """
    if strides != 1:
        x = x[:, ::strides, ::strides, :]
    b, h, w, c = x.shape
    # A 2-D product, not a 4-D einsum: through the einsum's transpose XLA:CPU laid the output gradient out
    # transposed for the kernel gradient (a slow copy and a slow dot); this is 17% faster in the EfficientNet step.
    return (x.reshape(b * h * w, c) @ kernel[0, 0]).reshape(b, h, w, kernel.shape[-1])


# im2col holds k*k shifted copies of the input: above this many bytes ``Conv`` keeps ``lax.conv``.
IM2COL_MAX_BYTES = 1 << 28


def im2col_conv(x: jax.Array, kernel: jax.Array, strides: int = 1, padding: str = "SAME") -> jax.Array:
    """A dense convolution as one matrix product over the input's shifted copies (im2col).

    Args:
      x: (B, H, W, Cin) input.
      kernel: (k, k, Cin, Cout) kernel, the layout of ``nn.Conv(Cout, (k, k))``.
      strides: spatial stride.
      padding: "SAME" or "VALID", as ``lax.conv``.

    Returns:
      (B, H', W', Cout), what ``lax.conv_general_dilated`` returns for the same arguments.
    """
    k = kernel.shape[0]
    ph, pw = _pads(x.shape, k, strides, padding)
    oh, ow = _out_size(x.shape[1], k, strides, ph), _out_size(x.shape[2], k, strides, pw)
    xp = _pad_hw(x, ph, pw)
    patches = jnp.concatenate([_tap(xp, i, j, oh, ow, strides) for i in range(k) for j in range(k)], axis=-1)
    out = patches.reshape(-1, patches.shape[-1]) @ kernel.reshape(-1, kernel.shape[-1])
    return out.reshape(x.shape[0], oh, ow, kernel.shape[-1])


class Conv(nn.Module):
    """A dense k x k convolution without bias, with the parameter (name, shape, initialiser) of ``nn.Conv``.

    Attributes:
      features: output channels.
      kernel_size: k.
      strides: spatial stride.
      padding: "SAME" or "VALID".
      impl: "auto" (im2col on CPU unless its patches would pass ``IM2COL_MAX_BYTES``; ``lax.conv`` on
        accelerators, which were not measured), "shift" (im2col) or "lax".
    """

    features: int
    kernel_size: int
    strides: int = 1
    padding: str = "SAME"
    impl: str = "auto"
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
        kernel = kernel.astype(x.dtype)
        impl = _resolve_impl(self.impl)
        patch_bytes = x.size * x.dtype.itemsize * k * k // self.strides**2
        if self.impl == "auto" and patch_bytes > IM2COL_MAX_BYTES:
            impl = "lax"
        if impl == "lax":
            dims = ("NHWC", "HWIO", "NHWC")
            return lax.conv_general_dilated(x, kernel, (self.strides,) * 2, self.padding, dimension_numbers=dims)
        return im2col_conv(x, kernel, self.strides, self.padding)


class DepthwiseConv(nn.Module):
    """Depthwise convolution with the parameters of ``nn.Conv(C, (k, k), feature_group_count=C)``.

    Attributes:
      kernel_size: k (odd).
      strides: spatial stride.
      padding: "SAME" or "VALID".
      use_bias: add a per-channel "bias" of shape (C,).
      impl: "auto", "lax" or "shift"; see ``depthwise_conv``.
    """

    kernel_size: int
    strides: int = 1
    padding: str = "SAME"
    use_bias: bool = False
    impl: str = "auto"
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (self.kernel_size, self.kernel_size, 1, c), jnp.float32)
        y = depthwise_conv(x, kernel.astype(x.dtype), self.strides, self.padding, self.impl)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (c,), jnp.float32).astype(y.dtype)
        return y


class PointwiseConv(nn.Module):
    """1x1 convolution with the parameters of ``nn.Conv(features, (1, 1))``, computed as a matrix product.

    Attributes:
      features: output channels.
      strides: spatial stride.
      use_bias: add a "bias" of shape (features,).
      impl: "lax" computes it with ``lax.conv_general_dilated`` as ``nn.Conv`` does (the reference for comparisons);
        "auto" and "shift" as a matrix product, 3-8x faster on XLA:CPU. Accelerators were not measured; a 1x1
        convolution is a plain matrix product there too, so "auto" keeps the dot everywhere.
    """

    features: int
    strides: int = 1
    use_bias: bool = False
    impl: str = "auto"
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features), jnp.float32)
        if _resolve_impl(self.impl) == "lax":
            dims = ("NHWC", "HWIO", "NHWC")
            y = lax.conv_general_dilated(x, kernel.astype(x.dtype), (self.strides,) * 2, "SAME", dimension_numbers=dims)
        else:
            y = pointwise_conv(x, kernel.astype(x.dtype), self.strides)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(y.dtype)
        return y
