"""Methods by name. A method is a module ``jsbir.models.<name>`` exporting three things:

- ``Model``: a Flax Linen module with ``Model.from_config(model_config, info)`` and
  ``__call__(batch, train=False, **kwargs) -> (embedding, out)``; ``out`` holds named intermediates;
- ``loss_fn(model, params, model_state, batch, rng, progress, loss_config) -> (loss, (model_state, measurements))``;
- ``embed(model, variables, images, modality) -> (B, D)`` float embeddings, modality "sketch" or "photo".

The trainer and evaluator know nothing else of a method, so a new method is one new file here plus its config.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

_NOT_METHODS = {
    "backbones",
    "pretrained",
    "torch_pickle",
    "keras_h5",
    "vgg",
    "resnet",
    "efficientnet",
    "conv",
    "attention",
    "gcn",
    "grl",
    "hashing",
}


def available_methods() -> list[str]:
    """Names of the method modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_METHODS)


def get_method(name: str) -> ModuleType:
    """Imports the method module ``name``.

    Raises:
      ValueError: naming the unknown method and the available ones.
    """
    if name not in available_methods():
        raise ValueError(f"config.method={name!r} is not one of {available_methods()}")
    module = importlib.import_module(f"{__name__}.{name}")
    for attr in ("Model", "loss_fn", "embed"):
        if not hasattr(module, attr):
            raise TypeError(f"method module {module.__name__} does not export {attr!r}")
    return module
