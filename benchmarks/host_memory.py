"""Peak host memory (RSS) of training and of evaluation against the size of the dataset; prints one JSON object.

For each size in ``--images``: a folder dataset (the ``folder`` layout, ``sketch/<class>`` and ``photo/<class>``,
half sketches and half photos, each sketch drawn from a photo) is generated under ``--scratch``, then prepared
(decoded once into the tfds records), then three processes run one after the other, each measured by the kernel's
own peak resident set size of that process (``os.wait4``):

* ``prepare``: reading the folder into the records;
* ``train``: ``python -m jsbir.main`` with BDA-SketRet at ``--size`` px for ``--steps`` steps, validation and the
  final test evaluation included;
* ``evaluate``: ``python -m jsbir.main evaluate`` on that run (the test classes only).

Images stay in the records and are read row by row (``jsbir.data.records``), so what grows with the dataset is what
is kept per example (labels, ids, file names, embeddings) and the evaluation's query x gallery scores (4 bytes a
pair; since evaluation is blocked, ``config.eval.query_block`` rows of them at once: ``eval_blocks.py``), never the
pixels. The JSON gives both of these (the whole matrix's size) alongside the peaks::

    python benchmarks/host_memory.py --images 5000,50000 > benchmarks/results/host_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
# Class names GloVe knows (the class vectors of real folders come from GloVe).
_CLASSES = (
    "cat dog horse cow sheep bird fish car bus truck train plane boat bicycle chair table bed lamp clock phone cup "
    "bottle knife fork spoon apple banana orange pear grape tree flower house bridge tower door window key book pen "
    "shoe hat shirt guitar piano drum ball kite star moon"
).split()


def make_folder(root: Path, images: int, size: int, seed: int = 0) -> None:
    """``images`` images of the ``_CLASSES``: per class, photos (JPEG, a coloured shape on a textured ground)
    and as many sketches (PNG, its outline), a sketch named after its photo."""
    rng = np.random.default_rng(seed)
    per_class = images // (2 * len(_CLASSES))
    for c, name in enumerate(_CLASSES):
        (root / "photo" / name).mkdir(parents=True, exist_ok=True)
        (root / "sketch" / name).mkdir(parents=True, exist_ok=True)
        sides = 3 + c % 6
        for i in range(per_class):
            angle = rng.uniform(0, 2 * np.pi) + np.arange(sides) * 2 * np.pi / sides
            radius = size * rng.uniform(0.25, 0.45)
            centre = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
            points = [tuple(p) for p in centre + radius * np.stack([np.cos(angle), np.sin(angle)], 1)]
            ground = rng.integers(0, 256, (size // 8, size // 8, 3), np.uint8)
            photo = Image.fromarray(ground).resize((size, size))
            ImageDraw.Draw(photo).polygon(points, fill=tuple(int(v) for v in (37 * c) % 256 + rng.integers(0, 30, 3)))
            photo.save(root / "photo" / name / f"p{i:05d}.jpg", quality=90)
            sketch = Image.new("RGB", (size, size), "white")
            ImageDraw.Draw(sketch).line(points + points[:1], fill="black", width=2)
            sketch.save(root / "sketch" / name / f"p{i:05d}-1.png")


def measured(command: list[str], log: Path) -> dict[str, float]:
    """Runs ``command`` (output to ``log``) and returns its wall time and the peak RSS of that process."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(command)} failed; see {log}")
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def run_size(images: int, args: argparse.Namespace, scratch: Path) -> dict:
    root, data_dir, workdir = scratch / f"folder{images}", scratch / f"tfds{images}", scratch / f"run{images}"
    if not root.is_dir():
        make_folder(root, images, args.size)
    config = f"configs/bda.py:dataset=folder,root={root},size={args.size},steps={args.steps},backbone={args.backbone}"
    flags = [
        f"--config.data.data_dir={data_dir}",
        f"--config.train.eval_every={args.steps}",
        f"--config.train.batch_size={args.batch}",
        f"--config.eval.batch_size={args.batch}",
    ]
    prepare = (
        "import sys; sys.path.insert(0, '.'); from configs import bda; from jsbir.data import get_dataset; "
        f"c = bda.get_config('dataset=folder,root={root},size={args.size}'); c.data.data_dir = '{data_dir}'; "
        "d = get_dataset(c.data); print(len(d.train_sketches), len(d.train_photos), len(d.test_sketches), "
        "len(d.test_photos))"
    )
    result = {"images": images, "prepare": measured([sys.executable, "-c", prepare], scratch / f"prepare{images}.log")}
    counts = (scratch / f"prepare{images}.log").read_text().split()[-4:]
    result["train_sketches"], result["train_photos"], result["test_sketches"], result["test_photos"] = map(int, counts)
    command = [sys.executable, "-m", "jsbir.main", "--config", config, "--workdir", str(workdir), *flags]
    result["train"] = measured(command, scratch / f"train{images}.log")
    evaluate = [sys.executable, "-m", "jsbir.main", "evaluate", "--workdir", str(workdir)]
    result["evaluate"] = measured(evaluate, scratch / f"evaluate{images}.log")
    result["score_matrix_mb"] = round(result["test_sketches"] * result["test_photos"] * 4 / 2**20, 1)
    result["pixels_mb_if_loaded"] = round(images * args.size * args.size * 3 / 2**20, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="5000,50000", help="dataset sizes, comma separated")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--batch", type=int, default=32, help="training and evaluation batch")
    parser.add_argument("--backbone", default="compact_cnn", help="the network (memory is about the data)")
    parser.add_argument("--scratch", default="", help="folder for the datasets and runs (default: a temporary one)")
    args = parser.parse_args(argv)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="jsbir_memory_"))
    scratch.mkdir(parents=True, exist_ok=True)
    sizes = [run_size(int(n), args, scratch) for n in args.images.split(",")]
    settings = {"size": args.size, "steps": args.steps, "batch": args.batch, "backbone": args.backbone}
    print(json.dumps({"benchmark": "host_memory", "settings": settings, "results": sizes}, indent=1))


if __name__ == "__main__":
    main()
