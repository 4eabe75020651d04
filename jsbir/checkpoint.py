"""Orbax checkpoints in the workdir: periodic saves, and restores that refuse foreign or broken files clearly.

A checkpoint holds three items: ``model`` (the parameters and the model's other collections), ``train`` (step and
optimiser state) and ``meta`` (a JSON description: the identity that must match to restore, plus the model
config that wrote it). ``config.init_from`` reads only the ``model`` item, so a run can start from another run's
parameters with another optimiser or freezing pattern. Every process restores; Orbax coordinates the writes so
that only the primary host writes metadata.

Integrity: after each save, process 0 records the SHA-256 of every file of the checkpoint in its
``integrity.json``; a restore recomputes them first, then checks that every restored value is finite. A damaged
checkpoint is refused naming the files, and the message names the newest intact earlier checkpoint, which
``config.train.resume_step`` resumes from (the later, damaged ones are then moved aside to ``<subdir>.damaged``,
never deleted).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from jsbir.state import TrainState, param_paths
from jsbir.writers import deferred_signals, write_atomic

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "best"
TEMPORARY_MARK = ".orbax-checkpoint-tmp"  # in the name of a folder Orbax writes before renaming it to <step>
INTEGRITY_FILE = "integrity.json"
_SHOWN = 3  # differing parameters named in a message


def _digests(folder: str) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` but the integrity record, by '/'-joined relative path."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            if relative == INTEGRITY_FILE:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[relative] = digest.hexdigest()
    return out


def damaged_files(folder: str) -> list[str] | None:
    """The files of a checkpoint folder that differ from, are missing from, or were added since its integrity
    record; None when it has no record (written before records existed, or by an interrupted save)."""
    record = os.path.join(folder, INTEGRITY_FILE)
    if not os.path.isfile(record):
        return None
    with open(record) as f:
        expected = json.load(f)
    found = _digests(folder)
    return sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))


def _non_finite(tree: Any) -> list[str]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [
        jax.tree_util.keystr(path)
        for path, leaf in leaves
        if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(np.asarray(leaf)).all()
    ]


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used; the message names the folder and the cause."""


def parameter_structure(params: Any) -> dict[str, list[int]]:
    """``{"/"-joined path: shape}`` of every parameter (arrays or ``jax.ShapeDtypeStruct`` leaves)."""
    return {path: list(leaf.shape) for path, leaf in zip(param_paths(params), jax.tree.leaves(params), strict=True)}


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def remove_stale_temporaries(workdir: str) -> list[str]:
    """Removes the temporary folders (``<step>.orbax-checkpoint-tmp*``) an interrupted save left in the workdir's
    checkpoint folders; returns their paths. Call it only while holding the workdir's lock (no save is running)."""
    removed = []
    for subdir in (CHECKPOINT_SUBDIR, BEST_SUBDIR):
        folder = os.path.join(workdir, subdir)
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for name in names:
            if TEMPORARY_MARK in name:
                path = os.path.join(folder, name)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    if removed:
        logging.warning("removed temporary checkpoint folders an interrupted save left: %s", removed)
    return removed


def _plain(value: Any) -> Any:
    """A value as JSON spells it, so a saved ``[128]`` and this run's ``(128,)`` compare equal."""
    return json.loads(json.dumps(value, default=str))


def _differences(name: str, saved: Any, wanted: Any) -> list[str]:
    """Human-readable differences between a saved identity value and this run's."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        keys = [k for k in sorted(set(saved) | set(wanted)) if _plain(saved.get(k)) != _plain(wanted.get(k))]
        out = [f"{name} {k}: checkpoint {saved.get(k)} vs run {wanted.get(k)}" for k in keys]
        return out[:_SHOWN] + ([f"and {len(out) - _SHOWN} more {name}"] if len(out) > _SHOWN else [])
    return [] if _plain(saved) == _plain(wanted) else [f"{name}: checkpoint {saved!r} vs run {wanted!r}"]


def _config_differences(saved: dict[str, Any] | None, wanted: dict[str, Any] | None, prefix: str = "config.model"):
    if not isinstance(saved, dict) or not isinstance(wanted, dict):
        return []
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}.{key}")
        elif _plain(a) != _plain(b):
            out.append(f"{prefix}.{key}: checkpoint {a!r} vs run {b!r}")
    return out


class Checkpointer:
    """Saves and restores a :class:`TrainState` together with a small JSON description of the run.

    Args:
      workdir: the run's folder; checkpoints go to ``workdir/checkpoints/<step>``.
      identity: what must match for a checkpoint to be restored into this run, e.g.
        ``{"method": "bda", "parameters": parameter_structure(params)}``; a checkpoint written under another
        identity is refused, naming what differs. An empty identity accepts any checkpoint (for inspection).
      model_config: the model config (a dict) recorded with each save and compared on a refusal, so that the
        message names the config fields behind a difference.
      keep: how many most recent checkpoints to keep.
      subdir: the folder under ``workdir`` (``checkpoints``; ``best`` holds the validation-chosen one).
    """

    def __init__(
        self,
        workdir: str,
        identity: dict[str, Any],
        model_config: dict[str, Any] | None = None,
        keep: int = 2,
        subdir: str = CHECKPOINT_SUBDIR,
    ):
        self.directory = epath.Path(workdir) / subdir
        self.identity = dict(identity)
        self.model_config = model_config
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
            item_names=("model", "train", "meta"),
        )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, state: TrainState, note: dict[str, Any] | None = None) -> int:
        """Writes ``state`` (synchronously: a run killed right after still finds it), with ``note`` added to its
        JSON description. Returns its step."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return step
        meta = {**self.identity, "step": step, "model_config": self.model_config, **(note or {})}
        with deferred_signals():  # a Ctrl-C now is honoured once the checkpoint is whole
            self._save(step, state, meta)
        return step

    def _save(self, step: int, state: TrainState, meta: dict[str, Any]) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave({"params": state.params, "model_state": state.model_state}),
                train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            folder = self._where(step)
            write_atomic(os.path.join(folder, INTEGRITY_FILE), json.dumps(_digests(folder), indent=1, sort_keys=True))

    def all_steps(self) -> list[int]:
        """Every checkpoint step present."""
        return list(self._manager.all_steps())

    def intact_steps(self) -> list[int]:
        """Steps whose files match their integrity record, newest first."""
        return [s for s in sorted(self._manager.all_steps(), reverse=True) if damaged_files(self._where(s)) == []]

    def set_aside_after(self, step: int) -> list[int]:
        """Moves every checkpoint newer than ``step`` to ``<subdir>.damaged`` (kept, out of the way of this run's
        saves) and returns their steps."""
        later = [s for s in self._manager.all_steps() if s > step]
        if jax.process_index() == 0:
            aside = epath.Path(os.fspath(self.directory) + ".damaged")
            aside.mkdir(parents=True, exist_ok=True)
            for s in later:
                shutil.move(self._where(s), os.fspath(aside / str(s)))
        self._manager.reload()
        return later

    def meta(self, step: int | None = None) -> dict[str, Any]:
        """The JSON description saved with the newest (or the given) checkpoint."""
        step = self.latest_step() if step is None else step
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def _where(self, step: int) -> str:
        return os.fspath(self.directory / str(step))

    def _check_meta(self, step: int, advice: str) -> None:
        where = self._where(step)
        try:
            meta = self.meta(step)
        except Exception as e:  # Orbax raises many types for unreadable files.
            raise CheckpointError(f"checkpoint {where} is unreadable ({e}). {advice}") from e
        differences = [d for key, wanted in self.identity.items() for d in _differences(key, meta.get(key), wanted)]
        if differences:
            hints = _config_differences(meta.get("model_config"), self.model_config)
            raise CheckpointError(
                f"checkpoint {where} was written by another model or config ({'; '.join(hints + differences)}). "
                f"{advice}"
            )

    def _restore_items(self, step: int, targets: dict[str, Any], advice: str) -> dict[str, Any]:
        where = self._where(step)
        damaged = damaged_files(where)
        if damaged is None:
            logging.warning("checkpoint %s has no %s: its files cannot be verified", where, INTEGRITY_FILE)
        if damaged:
            raise CheckpointError(
                f"checkpoint {where} is damaged: {len(damaged)} files differ from their SHA-256 record "
                f"({', '.join(damaged[:_SHOWN])}). {self._intact_advice(step, advice)}"
            )
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(**{k: ocp.args.StandardRestore(_abstract(v)) for k, v in targets.items()}),
            )
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {self._where(step)} could not be restored into this model ({type(e).__name__}: {e}). "
                f"{advice}"
            ) from e
        bad = _non_finite({k: restored[k] for k in targets})
        if bad:
            raise CheckpointError(
                f"checkpoint {where} holds NaN or infinite values ({', '.join(bad[:_SHOWN])}). "
                f"{self._intact_advice(step, advice)}"
            )
        return {k: restored[k] for k in targets}

    def _intact_advice(self, step: int, advice: str) -> str:
        earlier = [s for s in self.intact_steps() if s < step]
        if not earlier:
            return advice
        return f"{advice} Checkpoint {earlier[0]} is intact: {self.intact_hint.format(step=earlier[0], where=self)}"

    # How a user reaches an intact earlier checkpoint; ``evaluate``, ``index`` and ``search`` set their own option.
    intact_hint = (
        "rerun with --config.train.resume_step={step} to resume from it (newer checkpoints are then moved to "
        "{where.directory}.damaged)."
    )
    default_advice = "It was left in place; use another --workdir to start a fresh run."

    def restore(self, state: TrainState, step: int | None = None) -> TrainState:
        """Restores the newest (or the given) checkpoint into the structure and shardings of ``state``.

        ``state`` may be abstract (``jax.ShapeDtypeStruct`` leaves with shardings, from ``jax.eval_shape``): the
        arrays are then created by the restore alone. A refusal ends with ``default_advice`` and, for a damaged
        checkpoint, ``intact_hint`` (attributes a caller may replace with the options of its own command).

        Raises:
          CheckpointError: the checkpoint belongs to another model or config, or its files are damaged.
            Nothing is deleted: the message says how to start afresh.
        """
        step = self.latest_step() if step is None else step
        advice = self.default_advice
        self._check_meta(step, advice)
        restored = self._restore_items(
            step,
            {
                "model": {"params": state.params, "model_state": state.model_state},
                "train": {"step": state.step, "opt_state": state.opt_state},
            },
            advice,
        )
        return state.replace(**restored["model"], **restored["train"])

    def restore_variables(self, params: Any, model_state: Any) -> tuple[Any, Any]:
        """The parameters and model collections of the newest checkpoint (``config.init_from``), restored into the
        structure and shardings of ``params`` and ``model_state`` (arrays or abstract leaves).

        Raises:
          CheckpointError: there is no checkpoint, or it belongs to another model, or its files are damaged.
        """
        step = self.latest_step()
        if step is None:
            raise CheckpointError(f"config.init_from: no checkpoint in {os.fspath(self.directory)}")
        advice = "Check config.init_from."
        self._check_meta(step, advice)
        model = self._restore_items(step, {"model": {"params": params, "model_state": model_state}}, advice)["model"]
        return model["params"], model["model_state"]

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
