"""Shape checks shared by every weights port: a ported tree must have exactly the leaves and shapes a module wants."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def check_shapes(expected: Any, loaded: Any, source: str, what: str) -> None:
    """Checks that two trees have the same leaves with the same shapes.

    Args:
      expected: the tree the model wants (arrays or ``jax.ShapeDtypeStruct``).
      loaded: the ported tree.
      source: the weights file, for messages.
      what: what is being loaded, for messages.

    Raises:
      ValueError: naming missing, unexpected and wrongly shaped leaves.
    """
    flat_expected = flat(expected)
    flat_loaded = flat(loaded)
    missing = sorted(set(flat_expected) - set(flat_loaded))
    extra = sorted(set(flat_loaded) - set(flat_expected))
    if missing or extra:
        raise ValueError(
            f"{source}: {what}: the port lacks {len(missing)} model weights {missing[:4]} and has {len(extra)} "
            f"the model does not {extra[:4]}"
        )
    bad = [
        f"{k}: file {np.shape(v)} vs model {tuple(flat_expected[k].shape)}"
        for k, v in flat_loaded.items()
        if np.shape(v) != tuple(flat_expected[k].shape)
    ]
    if bad:
        raise ValueError(f"{source}: {what}: {len(bad)} weights have the wrong shape: " + "; ".join(bad[:4]))


def flat(tree: Any) -> dict[str, Any]:
    return {"/".join(str(k.key) for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
