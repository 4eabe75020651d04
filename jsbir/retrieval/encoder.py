"""A trained run as an encoder: its config and chosen checkpoint restored, images in, index embeddings out.

:func:`load_run` reads a run folder (the config it wrote, or one given, and its checkpoint: the validation-chosen
``best`` one when the run kept one, as the final report does, else the newest) and returns an :class:`Encoder`.
Images go through what the run's evaluation did to them (edge maps of photos, pre-extracted features, the
method's preprocessing and test-time views) and the evaluator's sharded embedding loop
(``Evaluator.encode``). A method evaluated with V views scores the mean of V dot products; the index embedding is
the V view embeddings side by side, whose single dot product is V times that mean (the same ranking; a searcher
divides its scores by V), and whose first D columns are exactly the first view, on which ITQ is fitted.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np

from jsbir import checkpoint, sharding
from jsbir.data import edges, features, get_dataset, pipeline, samplers
from jsbir.data.types import Images, SbirData
from jsbir.eval.evaluator import Evaluator
from jsbir.methods import get_method
from jsbir.selection import BEST_SUBDIR

CHECKPOINT_CHOICES = ("auto", "best", "latest")


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the config files use."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def config_from_dict(values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A locked config from the dict a run (or an index manifest) recorded."""
    config = ml_collections.ConfigDict(_tuples(values))
    config.lock()
    return config


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config of the latest start of the run in ``workdir`` (``config.json``, ``config.2.json``...).

    Raises:
      FileNotFoundError: the folder holds no config file.
    """
    found = glob.glob(os.path.join(workdir, "config*.json"))
    numbered = [(int(m.group(1) or 1), path) for path in found if (m := re.search(r"config(?:\.(\d+))?\.json$", path))]
    if not numbered:
        raise FileNotFoundError(f"{workdir} holds no config.json: is it a run folder written by training?")
    path = max(numbered)[1]
    with open(path, encoding="utf-8") as f:
        return config_from_dict(json.load(f))


def prepared_data(data: SbirData, config: Any, mesh: Any) -> SbirData:
    """``data`` as the run trained and evaluated on it: photos as edge maps, images as features, per the config."""
    data = edges.with_edge_maps(data, config, mesh)
    method = get_method(config.method)
    if samplers.get_sampler(method.inputs(config).sampler).stored == "features" and data.test_photos.image.ndim == 4:
        data, _ = features.with_features(data, config, mesh)
    return data


def checkpoint_sha256(folder: str) -> str:
    """SHA-256 of a checkpoint: of its integrity record (which lists every file's SHA-256), or of every file."""
    record = os.path.join(folder, checkpoint.INTEGRITY_FILE)
    digest = hashlib.sha256()
    paths = [record] if os.path.isfile(record) else sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True))
    for path in paths:
        if os.path.isfile(path):
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass
class Encoder:
    """A restored model that turns uint8 images into index embeddings and codes.

    Attributes:
      config: the run config.
      workdir: the run folder (absolute).
      data: the run's dataset, as loaded (images, not features or edge maps).
      evaluator: the run's test evaluator (its ``encode`` is the embedding loop).
      state: the restored train state.
      checkpoint: ``{"subdir", "step", "sha256"}`` of the restored checkpoint.
      mesh: the device mesh.
      model: the method's Model.
      extractor: the feature extractor of a method that trains on features (``jsbir.data.features``), else None.
    """

    config: Any
    workdir: str
    data: SbirData
    evaluator: Evaluator
    state: Any
    checkpoint: dict[str, Any]
    mesh: Any
    model: Any
    extractor: Any = None

    def __post_init__(self):
        cfg = self.config
        self.variables = {"params": self.state.params, **self.state.model_state}
        self.detector = None
        if cfg.data.get("photo_edges", "none") != "none":
            self.detector = edges.make_detector(cfg.data.photo_edges, cfg.data.get("hed_weights", ""))

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def image_size(self) -> int:
        """The side of the square images the model takes."""
        return int(self.data.info.image_size)

    @property
    def views(self) -> int:
        return self.evaluator.spec.views

    @property
    def learned_score(self) -> bool:
        """Whether the method ranks with a learned score (DSSA's HOLEF): an index, ranked by dot product, cannot."""
        return self.evaluator.method.score is not None

    @property
    def code_bits(self) -> int:
        """Bits of the method's own codes (0 when it learns none)."""
        return self.evaluator.spec.code_bits if self.evaluator.spec.codes else 0

    def fingerprint(self) -> dict[str, Any]:
        """What an index records of the model, and what must match to search it: method, model config, checkpoint."""
        model = json.dumps(self.config.model.to_dict(), sort_keys=True, default=str)
        return {
            "method": self.method,
            "model_config_sha256": hashlib.sha256(model.encode()).hexdigest(),
            "checkpoint": dict(self.checkpoint),
        }

    def encode(self, images: np.ndarray, modality: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Index embeddings and the method's codes of uint8 images.

        Args:
          images: (N, size, size, 3) uint8 RGB images, ``size`` = :attr:`image_size`.
          modality: "sketch" or "photo".

        Returns:
          (N, views * D) float32 embeddings (the views side by side), and the method's (N, bits)
          +-1 codes of the first view, or None when it learns none.

        Raises:
          ValueError: images of another shape.
        """
        images = np.asarray(images)
        want = (self.image_size, self.image_size, 3)
        if images.ndim != 4 or images.shape[1:] != want or images.dtype != np.uint8:
            raise ValueError(f"images must be (N, {want[0]}, {want[1]}, 3) uint8, got {images.shape} {images.dtype}")
        n = len(images)
        batch = Images(images, np.zeros(n, np.int32), np.full(n, -1, np.int64))
        if modality == "photo" and self.detector is not None:
            maps = edges.detect(self.detector, batch, edges.BATCH_PER_DEVICE * self.mesh.size, self.mesh)
            batch = dataclasses.replace(batch, image=maps)
        if self.extractor is not None:
            vectors = features.extract(self.extractor, batch, self.config.eval.batch_size, self.mesh, desc=modality)
            batch = dataclasses.replace(batch, image=vectors)
        views, codes = self.evaluator.encode(self.variables, batch, modality)
        return np.concatenate(views, axis=1).astype(np.float32), codes

    def embed(self, images: np.ndarray, modality: str) -> np.ndarray:
        """(N, views * D) float32 index embeddings of uint8 images (see :meth:`encode`)."""
        return self.encode(images, modality)[0]


def parse_choice(choice: str | int) -> tuple[str, int | None]:
    """``--checkpoint``'s value as (choice, step): "auto", "best", "latest", or a step number N of the run's
    ``checkpoints/`` folder (("latest", N)).

    Raises:
      ValueError: anything else.
    """
    text = str(choice)
    if text.isdigit():
        return "latest", int(text)
    if text not in CHECKPOINT_CHOICES:
        raise ValueError(f"--checkpoint {text!r} is not one of {', '.join(CHECKPOINT_CHOICES)} or a step number")
    return text, None


def _refusal_advice(ckpt: checkpoint.Checkpointer, subdir: str) -> None:
    """Makes the checkpoint's refusals name what works for ``evaluate``, ``index`` and ``search``: another
    ``--checkpoint``, never the trainer's ``resume_step``."""
    ckpt.intact_hint = "pass --checkpoint {step} to use it."
    other = "--checkpoint latest uses the newest training checkpoint instead" if subdir == BEST_SUBDIR else (
        "--checkpoint N uses an earlier step, --checkpoint best the validation-chosen one")  # fmt: skip
    ckpt.default_advice = f"It was left in place; {other}."


def _choose_checkpoint(workdir: str, choice: str) -> str:
    if choice not in CHECKPOINT_CHOICES:
        raise ValueError(f"checkpoint choice {choice!r} is not one of {CHECKPOINT_CHOICES}")
    best = os.path.join(workdir, BEST_SUBDIR)
    has_best = os.path.isdir(best) and any(name.isdigit() for name in os.listdir(best))
    if choice == "best" and not has_best:
        raise FileNotFoundError(f"{workdir} has no validation-chosen checkpoint in {best}")
    if choice == "best" or (choice == "auto" and has_best):
        return BEST_SUBDIR
    latest = os.path.join(workdir, checkpoint.CHECKPOINT_SUBDIR)
    if not (os.path.isdir(latest) and any(name.isdigit() for name in os.listdir(latest))):
        raise FileNotFoundError(f"{workdir} holds no checkpoint (no {latest}/<step>): train it first")
    return checkpoint.CHECKPOINT_SUBDIR


def load_run(
    workdir: str, config: Any = None, choice: str = "auto", mesh: Any = None, step: int | None = None
) -> Encoder:
    """Restores a trained run as an :class:`Encoder`.

    Args:
      workdir: the run folder.
      config: the run's config; None reads the one the run wrote (its latest start).
      choice: "auto" (the validation-chosen ``best`` checkpoint when the run kept one, as its final report did,
        else the newest), "best", "latest", or a step number (of ``checkpoints/``; see :func:`parse_choice`).
      mesh: the device mesh (default: all devices).
      step: a specific step of that folder (default: its newest).

    Raises:
      FileNotFoundError: no run config or no checkpoint there.
      jsbir.checkpoint.CheckpointError: the checkpoint belongs to another method or config, or is damaged.
    """
    from jsbir.train import StateFactory, checkpoint_identity

    workdir = os.path.abspath(os.path.expanduser(workdir))
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"run folder {workdir} does not exist")
    config = read_run_config(workdir) if config is None else config
    choice, chosen_step = parse_choice(choice)
    step = chosen_step if step is None else step
    subdir = _choose_checkpoint(workdir, choice)
    method = get_method(config.method)
    mesh = sharding.make_mesh() if mesh is None else mesh
    data = get_dataset(config.data)
    model = method.Model.from_config(config.model, data.info)
    inputs = method.inputs(config)
    shape, extractor = data.train_sketches.image.shape[1:], None
    if samplers.get_sampler(inputs.sampler).stored == "features":  # the model takes the extractor's vectors
        extractor = features.make_extractor(config, data.info.image_size)
        probe = jax.ShapeDtypeStruct((1, *shape), np.float32)
        shape = jax.eval_shape(extractor.embed, extractor.variables, probe).shape[1:]
    example = pipeline.example_batch(inputs.sampler, inputs.preprocess, shape)
    factory = StateFactory(method, model, config, example, mesh)
    identity = checkpoint_identity(config, factory.abstract.params)
    ckpt = checkpoint.Checkpointer(workdir, identity, config.model.to_dict(), subdir=subdir)
    _refusal_advice(ckpt, subdir)
    try:
        if step is not None and step not in ckpt.all_steps():
            raise FileNotFoundError(
                f"--checkpoint {step}: no such checkpoint in {ckpt.directory} (there are {sorted(ckpt.all_steps())})"
            )
        step = ckpt.latest_step() if step is None else step
        state = ckpt.restore(factory.abstract_with_shardings(), step)
        fusion_weight = float(ckpt.meta(step).get("fusion_weight", 0.0)) if subdir == BEST_SUBDIR else 0.0
    finally:
        ckpt.close()
    folder = os.path.join(workdir, subdir, str(step))
    record = {"subdir": subdir, "step": int(step), "sha256": checkpoint_sha256(folder), "fusion_weight": fusion_weight}
    evaluator = Evaluator(method, model, data, config, mesh)
    return Encoder(config, workdir, data, evaluator, state, record, mesh, model, extractor)
