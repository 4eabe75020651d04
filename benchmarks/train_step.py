"""Times a full training step of a backbone, or one depthwise / pointwise layer, and prints one JSON object.

Training step (forward, backward, SGD momentum 0.9 update; jitted with donation) of backbone + global average pool +
linear classifier under softmax cross-entropy, on random images and labels::

    python benchmarks/train_step.py --backbone efficientnet_lite0 --size 128 --batch 32 --impl auto

One layer at batch ``--batch``: forward, input gradient and kernel gradient, every implementation, interleaved::

    python benchmarks/train_step.py --layer depthwise --channels 144 --spatial 32 --kernel 3 --stride 1
    python benchmarks/train_step.py --layer pointwise --channels 144 --out-channels 24 --spatial 32

Timings use ``time.perf_counter`` around ``jax.block_until_ready``; figures are the median, min and max over
``--repeats`` calls after ``--warmup`` calls. Layer timings interleave the implementations, one call each per round,
so that load from other processes on a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import statistics
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jsbir.nn import backbones
from jsbir.nn.conv import depthwise_conv, pointwise_conv


def keep_freed_memory() -> bool:
    """Stops glibc malloc from handing large blocks back to the OS (``mallopt``: no mmap, no trimming).

    XLA:CPU allocates every large buffer afresh on each call; glibc serves blocks over 32 MB with ``mmap`` and
    unmaps them on free, so each step page-faults its large buffers in again. A 48 MB elementwise op takes 35 ms
    instead of 3 ms that way. The same effect from the shell: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<big>``.

    Returns:
      whether both settings were accepted (False off glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 40))


class _Classifier(nn.Module):
    """Backbone, global average pool and a linear classifier."""

    backbone: nn.Module
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return nn.Dense(self.num_classes)(jnp.mean(self.backbone(x, train=train), axis=(1, 2)))


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = [1e3 * s for s in seconds]
    return {"ms": statistics.median(ms), "ms_min": min(ms), "ms_max": max(ms)}


def _time_interleaved(fns: dict[str, Callable[[], jax.Array]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Calls every function once per round, ``warmup`` rounds untimed, then ``repeats`` timed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return times


def _backbone_kwargs(args: argparse.Namespace) -> dict:
    if args.backbone.startswith("efficientnet_lite"):
        return {"impl": args.impl, "classifier_classes": 0}
    if args.backbone == "compact_cnn":
        return {"impl": args.impl}
    return {}


def bench_train_step(args: argparse.Namespace) -> dict:
    """Times the jitted training step; returns samples/s figures and the compile time."""
    model = _Classifier(backbones.get_backbone(args.backbone, **_backbone_kwargs(args)), args.num_classes)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, args.num_classes, args.batch), jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(0), images[:1])
    params = variables.pop("params")
    model_state = variables  # frozen BatchNorm statistics, if any: read, never written
    tx = optax.sgd(args.lr, momentum=0.9)
    opt_state = tx.init(params)

    def loss_fn(params, images, labels):
        logits = model.apply({"params": params, **model_state}, images, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(params, opt_state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, images, labels).compile()
    compile_s = time.perf_counter() - start
    losses = []
    for _ in range(args.warmup):
        params, opt_state, loss = compiled(params, opt_state, images, labels)
        losses.append(float(loss))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        params, opt_state, loss = jax.block_until_ready(compiled(params, opt_state, images, labels))
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    rates = [args.batch / t for t in times]
    return {
        "samples_per_s": statistics.median(rates),
        "samples_per_s_min": min(rates),
        "samples_per_s_max": max(rates),
        "step_ms": 1e3 * statistics.median(times),
        "compile_s": compile_s,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "params": int(sum(p.size for p in jax.tree.leaves(params))),
    }


def _depthwise(x: jax.Array, w: jax.Array, stride: int, impl: str) -> jax.Array:
    return depthwise_conv(x, w, stride, "SAME", impl)


def _layer_fns(args: argparse.Namespace) -> tuple[dict[str, Callable[[], jax.Array]], dict]:
    """The functions timed in ``--layer`` mode, by "impl/op", and the shapes they use."""
    rng = np.random.default_rng(0)
    b, s, c = args.batch, args.spatial, args.channels
    x = jnp.asarray(rng.standard_normal((b, s, s, c)), jnp.float32)
    if args.layer == "depthwise":
        k = args.kernel
        w = jnp.asarray(rng.standard_normal((k, k, 1, c)), jnp.float32)
        impls = {impl: functools.partial(_depthwise, stride=args.stride, impl=impl) for impl in ("lax", "shift")}
        shapes = {"channels": c, "kernel": k, "stride": args.stride}
    elif args.layer == "pointwise":
        w = jnp.asarray(rng.standard_normal((1, 1, c, args.out_channels)), jnp.float32)

        def conv(x, w):
            dims = ("NHWC", "HWIO", "NHWC")
            return lax.conv_general_dilated(x, w, (args.stride,) * 2, "SAME", dimension_numbers=dims)

        impls = {"lax": conv, "matmul": lambda x, w: pointwise_conv(x, w, args.stride)}
        shapes = {"channels": c, "out_channels": args.out_channels, "stride": args.stride}
    else:
        raise ValueError(f"--layer={args.layer!r} is not 'depthwise' or 'pointwise'")
    g = jnp.asarray(rng.standard_normal(jax.eval_shape(impls["lax"], x, w).shape), jnp.float32)
    fns = {}
    for name, f in impls.items():
        fwd = jax.jit(f)
        grad_in = jax.jit(lambda x, w, g, f=f: jax.vjp(lambda x: f(x, w), x)[1](g)[0])
        grad_kernel = jax.jit(lambda x, w, g, f=f: jax.vjp(lambda w: f(x, w), w)[1](g)[0])
        fns[f"{name}/forward"] = lambda fwd=fwd: fwd(x, w)
        fns[f"{name}/grad_input"] = lambda grad_in=grad_in: grad_in(x, w, g)
        fns[f"{name}/grad_kernel"] = lambda grad_kernel=grad_kernel: grad_kernel(x, w, g)
    return fns, shapes


def bench_layer(args: argparse.Namespace) -> dict:
    """Times forward, input gradient and kernel gradient of one layer for every implementation (ms)."""
    fns, shapes = _layer_fns(args)
    times = _time_interleaved(fns, args.repeats, max(args.warmup, 1))
    return {"layer": args.layer, "spatial": args.spatial, **shapes, "ms": {n: _stats(t) for n, t in times.items()}}


def main(argv: list[str] | None = None) -> dict:
    """Parses flags, runs the benchmark, prints and returns its JSON object."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=sorted(backbones.BACKBONES))
    parser.add_argument("--size", type=int, default=128, help="image side (train step)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--impl", default="auto", choices=["auto", "lax", "shift"], help="convolution path")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--layer", choices=["depthwise", "pointwise"], help="time one layer instead")
    parser.add_argument("--channels", type=int, default=144)
    parser.add_argument("--out-channels", type=int, default=24)
    parser.add_argument("--spatial", type=int, default=32)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--keep-freed-memory", action="store_true", help="glibc: no mmap/trim (see keep_freed_memory)")
    args = parser.parse_args(argv)
    malloc_tuned = keep_freed_memory() if args.keep_freed_memory else False
    if args.layer:
        result = bench_layer(args)
    else:
        result = {"backbone": args.backbone, "size": args.size, "impl": args.impl, **bench_train_step(args)}
    result.update(batch=args.batch, repeats=args.repeats, keep_freed_memory=malloc_tuned)
    result.update(jax=jax.__version__, device=str(jax.devices()[0]))
    result["device_kind"] = jax.devices()[0].device_kind
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
