"""Orbax checkpoints in the workdir: restore-or-init, periodic saves, clear errors on foreign or broken files.

Restore order (the first that exists wins): the workdir's own latest checkpoint (a resumed run) >
``config.init_from`` (parameters of another run) > the pretrained backbone the model loads itself > scratch.
Every process restores; Orbax coordinates the writes so that only the primary host writes metadata.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from jsbir.state import TrainState

CHECKPOINT_SUBDIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used; the message names the folder and the cause."""


def _saveable(state: TrainState) -> dict[str, Any]:
    return {
        "step": state.step,
        "params": state.params,
        "model_state": state.model_state,
        "opt_state": state.opt_state,
    }


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    """Saves and restores a :class:`TrainState` together with a small JSON description of the run.

    Args:
      workdir: the run's folder; checkpoints go to ``workdir/checkpoints/<step>``.
      identity: what must match for a checkpoint to be restored into this run, e.g.
        ``{"method": "bda", "embed_dim": 64}``. A checkpoint written under a different identity is refused.
      keep: how many most recent checkpoints to keep.
    """

    def __init__(self, workdir: str, identity: dict[str, Any], keep: int = 2):
        self.directory = epath.Path(workdir) / CHECKPOINT_SUBDIR
        self.identity = dict(identity)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, state: TrainState) -> int:
        """Writes ``state`` (synchronously: a run killed right after still finds it). Returns its step."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return step
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_saveable(state)),
                meta=ocp.args.JsonSave({**self.identity, "step": step}),
            ),
        )
        self._manager.wait_until_finished()
        return step

    def restore(self, state: TrainState, step: int | None = None) -> TrainState:
        """Restores the newest (or the given) checkpoint into the structure and shardings of ``state``.

        Raises:
          CheckpointError: the checkpoint belongs to another model or config, or its files are damaged.
            Nothing is deleted: the message says how to start afresh.
        """
        step = self.latest_step() if step is None else step
        where = os.fspath(self.directory / str(step))
        advice = "It was left in place; use another --workdir to start a fresh run."
        try:
            meta = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )["meta"]
        except Exception as e:  # Orbax raises many types for unreadable files.
            raise CheckpointError(f"checkpoint {where} is unreadable ({e}). {advice}") from e
        mismatched = {k: (meta.get(k), v) for k, v in self.identity.items() if meta.get(k) != v}
        if mismatched:
            detail = ", ".join(
                f"{k}: checkpoint {a!r} vs run {b!r}" for k, (a, b) in mismatched.items()
            )
            raise CheckpointError(
                f"checkpoint {where} was written by another model or config ({detail}). {advice}"
            )
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_abstract(_saveable(state)))
                ),
            )["state"]
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {where} could not be restored into this model ({type(e).__name__}: "
                f"{e}). {advice}"
            ) from e
        return state.replace(**restored)

    def restore_params(self, state: TrainState) -> TrainState:
        """Takes only the parameters and model collections of the newest checkpoint (``init_from``)."""
        restored = self.restore(state)
        return state.replace(params=restored.params, model_state=restored.model_state)

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
