"""Config values checked before anything runs or is written, each error naming its key.

A value that cannot work (a zero batch, a checkpoint interval of 0, a learning rate that is not a positive number)
is refused at start, not after minutes of training or as a framework error far from its cause.
"""

from __future__ import annotations

import math
from typing import Any

# (key, test, what it must be)
_RULES: tuple[tuple[str, Any, str], ...] = (
    ("train.steps", lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    ("train.batch_size", lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    ("train.checkpoint_every", lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    ("train.log_every", lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    ("train.eval_every", lambda v: isinstance(v, int) and v >= 0, "a non-negative integer (0: only at the end)"),
    ("train.keep_checkpoints", lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    ("train.warmup_steps", lambda v: isinstance(v, int) and v >= 0, "a non-negative integer"),
    ("train.lr", lambda v: isinstance(v, int | float) and math.isfinite(v) and v > 0, "a positive finite number"),
    ("train.grad_clip", lambda v: isinstance(v, int | float) and v > 0, "a positive number"),
    ("eval.batch_size", lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    ("eval.hash_bits", lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    ("eval.views", lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    ("eval.ks", lambda v: len(v) > 0 and all(isinstance(k, int) and k > 0 for k in v), "positive integers"),
    ("eval.acc_ks", lambda v: len(v) > 0 and all(isinstance(k, int) and k > 0 for k in v), "positive integers"),
    ("data.image_size", lambda v: isinstance(v, int) and 16 <= v <= 512, "an integer in [16, 512]"),
    ("data.val_fraction", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("data.test_fraction", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    # "none" or a detector of jsbir.data.edges.DETECTORS (tests/test_hed.py keeps the two lists equal)
    ("data.photo_edges", lambda v: v in ("none", "hed", "classical"), "'none', 'hed' or 'classical'"),
)


def check_config(config: Any) -> None:
    """Raises a ValueError naming the first key of ``config`` whose value cannot work.

    Keys the config does not have (a method without that section) are not checked.
    """
    for key, test, must in _RULES:
        section, field = key.split(".")
        if section not in config or field not in config[section]:
            continue
        value = config[section][field]
        try:
            ok = bool(test(value))
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"config.{key}={value!r}: must be {must}")


def check_resume(config: Any, restored_step: int) -> None:
    """Refuses a total step count below the step a resumed run restored."""
    if config.train.steps < restored_step:
        raise ValueError(
            f"config.train.steps={config.train.steps} is below step {restored_step} of the checkpoint this run "
            "resumes: raise it, or use another --workdir to start afresh"
        )
