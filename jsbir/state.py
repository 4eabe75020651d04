"""The training state: one explicit pytree holding everything a step reads and writes."""

from __future__ import annotations

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


def make_optimizer(train_config: Any) -> optax.GradientTransformation:
    """The one optimiser of a run: warm-up then cosine decay, gradient clipping, AdamW or SGD.

    Args:
      train_config: the ``config.train`` section (optimizer, lr, warmup_steps, steps, weight_decay,
        momentum, grad_clip).

    Returns:
      An optax GradientTransformation.
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
        raise ValueError(
            f"config.train.optimizer={train_config.optimizer!r} is not one of {sorted(optimizers)}"
        )
    return optax.chain(
        optax.clip_by_global_norm(train_config.grad_clip), optimizers[train_config.optimizer]()
    )
