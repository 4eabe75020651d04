"""Training throughput of every registered method, and the input pipeline's on its own; prints one JSON object.

For each method and image size: the method's jitted train step (the trainer's own, ``train.make_train_step``) on its
config's global batch of random inputs shaped like the training stream, sharded over all devices: compilation time,
then the median, min and max step time over ``--steps`` steps after ``--warmup`` steps, and samples/s. XLA's cost
analysis of the compiled step gives its FLOPs, hence the achieved FLOP/s, and on a GPU whose peak is known (or
``--peak-tflops``) the share of the peak. Separately, the tf.data training stream (``train.training_batches``:
sampling, decoding, augmentation, batching; no training) on the synthetic set at that size, in images/s and
samples/s, so one can see whether the pipeline would ever hold the step back (``pipeline_bound``)::

    python benchmarks/train_throughput.py                                   # every method, default size and 128 px
    python benchmarks/train_throughput.py --methods bda --sizes 64 --steps 3 --warmup 1 --pipeline-batches 10

``default`` in ``--sizes`` is each config's own image size. ``zscmr`` trains on cached feature vectors: its step
takes vectors (the image size changes nothing) and it has no image pipeline. The synthetic set for the pipeline is
prepared (rendered once) under ``--data-dir`` with ``--per-class`` training instances per class.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the configs/ package

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jsbir import sharding, train  # noqa: E402
from jsbir.data import features, pipeline, samplers, synthetic, with_class_graph  # noqa: E402
from jsbir.data.types import DatasetInfo, SbirData  # noqa: E402
from jsbir.methods import available_methods, get_method  # noqa: E402

# Dense peak TFLOP/s by device kind: float32 on the CUDA cores, and TF32 on the tensor cores (XLA's default
# precision for float32 matrix products on these GPUs). From the vendors' data sheets (SXM parts).
PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7},
    "H100": {"fp32": 67.0, "tf32": 494.7},
    "A100": {"fp32": 19.5, "tf32": 156.0},
    "L4": {"fp32": 30.3, "tf32": 60.0},
}


def _info(image_size: int) -> DatasetInfo:
    """The synthetic set's classes, split and side information, without rendering an image."""
    unseen = tuple(synthetic.CLASS_NAMES.index(name) for name in synthetic.UNSEEN_CLASSES)
    info = DatasetInfo(
        name="synthetic",
        split="default",
        class_names=tuple(synthetic.CLASS_NAMES),
        seen=tuple(i for i in range(len(synthetic.CLASS_NAMES)) if i not in unseen),
        unseen=tuple(sorted(unseen)),
        semantics=np.asarray(synthetic.side_information(), np.float32),
        image_size=image_size,
    )
    return info


def _config(method: str, size: str) -> Any:
    module = importlib.import_module(f"configs.{method}")
    return module.get_config("" if size == "default" else f"size={size}")


def _stored_shape(config: Any, method: Any) -> tuple[int, ...]:
    """One stored example's shape: an image, or the feature vector a features method trains on."""
    size = config.data.image_size
    if samplers.get_sampler(method.inputs(config).sampler).stored != "features":
        return (size, size, 3)
    extractor = features.make_extractor(config, size)
    probe = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
    return jax.eval_shape(extractor.embed, extractor.variables, probe).shape[1:]


def _peak(kind: str, override: float) -> dict[str, float] | None:
    if override:
        return {"given": override}
    return next((peak for name, peak in PEAK_TFLOPS.items() if name in kind), None)


def time_train_step(name: str, size: str, steps: int, warmup: int, peak_tflops: float) -> dict[str, Any]:
    """Compilation, step time, samples/s and FLOP/s of ``name``'s train step at ``size``."""
    method = get_method(name)
    config = _config(name, size)
    data = with_class_graph(SbirData(_info(config.data.image_size), *[None] * 4), config.data)
    model = method.Model.from_config(config.model, data.info)
    inputs = method.inputs(config)
    example = pipeline.example_batch(inputs.sampler, inputs.preprocess, _stored_shape(config, method))
    mesh = sharding.make_mesh()
    batch_size = config.train.batch_size
    rng = np.random.default_rng(0)
    labels = np.asarray(data.info.seen, np.int32)[np.arange(batch_size) % len(data.info.seen)]
    batch = {k: rng.uniform(-1, 1, (batch_size, *v.shape[1:])).astype(np.float32) for k, v in example.items()}
    batch = sharding.to_global({**batch, "label": labels}, mesh)
    state = train.StateFactory(method, model, config, example, mesh).build("scratch", None, {})
    step = train.make_train_step(method, model, config.loss, config.train.steps)
    key = jax.random.key(0)
    begin = time.perf_counter()
    compiled = step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - begin
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    times = []
    for i in range(warmup + steps):
        begin = time.perf_counter()
        state, measurements = step(state, batch, key)
        jax.block_until_ready(measurements)
        if i >= warmup:
            times.append(time.perf_counter() - begin)
    median = statistics.median(times)
    out = {
        "method": name,
        "image_size": config.data.image_size,
        "inputs": f"{inputs.sampler}/{inputs.preprocess}",
        "input_shape": list(example["sketch"].shape[1:]),
        "batch": batch_size,
        "backbone": config.model.get("backbone", config.get("features", {}).get("backbone", "")),
        "compile_s": round(compile_s, 2),
        "step_ms": round(1e3 * median, 2),
        "step_ms_min": round(1e3 * min(times), 2),
        "step_ms_max": round(1e3 * max(times), 2),
        "samples_per_s": round(batch_size / median, 2),
        "gflops_per_step": round(flops / 1e9, 3),
        "achieved_tflops": round(flops / median / 1e12, 4),
    }
    peak = _peak(jax.devices()[0].device_kind, peak_tflops) if jax.default_backend() == "gpu" else None
    if peak and flops:
        out["peak_tflops"] = peak
        out["share_of_peak"] = {k: round(flops / median / 1e12 / v, 4) for k, v in peak.items()}
    return out


def time_pipeline(name: str, size: str, batches: int, data_dir: str, per_class: int) -> dict[str, Any] | None:
    """Images/s and samples/s of ``name``'s tf.data training stream on the synthetic set at ``size``."""
    from jsbir.data import get_dataset

    method = get_method(name)
    config = _config(name, size)
    inputs = method.inputs(config)
    if samplers.get_sampler(inputs.sampler).stored == "features":
        return None
    with config.unlocked():
        config.data.data_dir = data_dir
        config.data.train_per_class = per_class
        config.data.test_per_class = 2
    sketches, photos = get_dataset(config.data).training_pairs()
    stream = train.training_batches(config, inputs, sketches, photos)
    first = next(stream)  # builds the tf.data graph and fills the prefetch buffer
    images = sum(v.shape[0] for k, v in first.items() if k != "label")
    begin = time.perf_counter()
    for _ in range(batches):
        next(stream)
    seconds = time.perf_counter() - begin
    return {
        "images_per_sample": images // config.train.batch_size,
        "images_per_s": round(images * batches / seconds, 1),
        "samples_per_s": round(config.train.batch_size * batches / seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(available_methods()), help="comma-separated method names")
    parser.add_argument("--sizes", default="default,128", help="image sides; 'default' is each config's own")
    parser.add_argument("--steps", type=int, default=5, help="timed train steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed train steps after compilation")
    parser.add_argument("--pipeline-batches", type=int, default=20, help="timed pipeline batches (0: skip)")
    parser.add_argument("--per-class", type=int, default=16, help="synthetic training instances per class")
    parser.add_argument("--data-dir", default="", help="tfds folder for the synthetic set ('' = tfds default)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak, if not in PEAK_TFLOPS")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data
    load_before = os.getloadavg()[0]
    rows = []
    with contextlib.redirect_stdout(sys.stderr):  # tensorflow-datasets prints while preparing; stdout is the JSON
        for name in args.methods.split(","):
            measured = set()
            for size in args.sizes.split(","):
                resolved = _config(name, size).data.image_size
                if resolved in measured:  # "default" is already this size for this method
                    continue
                measured.add(resolved)
                row = time_train_step(name, size, args.steps, args.warmup, args.peak_tflops)
                if args.pipeline_batches:
                    piped = time_pipeline(name, size, args.pipeline_batches, args.data_dir, args.per_class)
                    row["pipeline"] = piped or "trains on cached feature vectors: no image pipeline"
                    if piped:
                        row["pipeline_bound"] = piped["samples_per_s"] < row["samples_per_s"]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    device = jax.devices()[0]
    result = {
        "benchmark": "train_throughput",
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],  # the machine may be shared
        "jax": jax.__version__,
        "settings": vars(args),
        "results": rows,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
