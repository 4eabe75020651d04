"""The training state: one explicit pytree holding everything a step reads and writes, and its optimiser.

Freezing is generic: ``config.train.freeze`` is a regular expression searched (``re.search``) in every parameter's
'/'-joined path, such as ``sketch_net/blocks_3/expand_conv/kernel``. A matching parameter is frozen: the optimiser
gives it exactly zero updates (no weight decay either), and the trainer stops its gradient so that no backward pass
is computed for it. ``"(sketch_net|photo_net)/"`` freezes both backbones of a two-tower model;
``"_net/(stem_|blocks_([0-9]|1[0-3])/)"`` freezes all but the last two blocks (and the head) of EfficientNet.
"""

from __future__ import annotations

import re
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Parameters, non-trained model collections (such as batch statistics), optimiser state and step.

    Attributes:
      step: the number of optimiser updates applied so far (a scalar int32 array).
      params: the trainable parameters.
      model_state: every other Flax collection the model carries (``batch_stats``...), possibly empty.
      opt_state: the optax state of ``tx``.
      tx: the optax transformation; static, not part of the checkpoint.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: Any, model_state: Any, tx: optax.GradientTransformation) -> TrainState:
        """Builds the state at step 0."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            model_state=model_state,
            opt_state=tx.init(params),
            tx=tx,
        )

    def apply_gradients(self, grads: Any, model_state: Any) -> TrainState:
        """Applies one optimiser update and stores the model's new collections."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(
            step=self.step + 1,
            params=optax.apply_updates(self.params, updates),
            model_state=model_state,
            opt_state=opt_state,
        )


def param_paths(params: Any) -> list[str]:
    """The '/'-joined path of every leaf of ``params``, in ``jax.tree`` leaf order."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) for path, _ in leaves]


def frozen_mask(params: Any, pattern: str, key: str = "config.train.freeze") -> Any | None:
    """Which parameters ``pattern`` freezes: a tree of bools shaped like ``params``, or None for no pattern.

    Args:
      params: the parameter tree (arrays or ``jax.ShapeDtypeStruct`` leaves; only the structure is read).
      pattern: a regular expression searched in each '/'-joined parameter path; empty freezes nothing.
      key: the config key that holds ``pattern``, for messages.

    Returns:
      None when ``pattern`` is empty, else a tree with ``params``'s structure and True at the frozen leaves.

    Raises:
      ValueError: ``pattern`` is not a valid regular expression, or matches no parameter.
    """
    if not pattern:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{key}={pattern!r} is not a valid regular expression: {e}") from e
    paths = param_paths(params)
    frozen = [bool(regex.search(path)) for path in paths]
    if not any(frozen):
        raise ValueError(f"{key}={pattern!r} matches no parameter; paths look like {paths[:3]} ({len(paths)} in all)")
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), frozen)


def make_optimizer(train_config: Any, params: Any, freeze: str | None = None) -> optax.GradientTransformation:
    """The one optimiser of a run: warm-up then cosine decay, gradient clipping, AdamW or SGD, and freezing.

    Args:
      train_config: the ``config.train`` section (optimizer, lr, warmup_steps, steps, weight_decay,
        momentum, grad_clip, freeze).
      params: the parameter tree the optimiser will update (arrays or ``jax.ShapeDtypeStruct`` leaves); frozen
        parameters are those whose path ``train_config.freeze`` matches (see the module docstring).
      freeze: a pattern to use instead of ``train_config.freeze`` (the trainer adds the method's own).

    Returns:
      An optax GradientTransformation. Frozen parameters get zero updates and no weight decay; gradient clipping
      measures the trainable gradients only.

    Raises:
      ValueError: an unknown optimizer, or a freeze pattern that is invalid or matches nothing.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=train_config.lr,
        warmup_steps=max(1, train_config.warmup_steps),
        decay_steps=max(train_config.steps, train_config.warmup_steps + 1),
        end_value=train_config.lr * 0.01,
    )
    optimizers = {
        "adamw": lambda: optax.adamw(schedule, weight_decay=train_config.weight_decay),
        "sgd": lambda: optax.chain(
            optax.add_decayed_weights(train_config.weight_decay),
            optax.sgd(schedule, momentum=train_config.momentum),
        ),
    }
    if train_config.optimizer not in optimizers:
        raise ValueError(f"config.train.optimizer={train_config.optimizer!r} is not one of {sorted(optimizers)}")
    tx = optax.chain(optax.clip_by_global_norm(train_config.grad_clip), optimizers[train_config.optimizer]())
    pattern = train_config.get("freeze", "") if freeze is None else freeze  # older saved configs lack the key
    frozen = frozen_mask(params, pattern)
    if frozen is None:
        return tx
    labels = jax.tree.map(lambda f: "frozen" if f else "trained", frozen)
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
