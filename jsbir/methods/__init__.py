"""Methods by name. Each module of this package other than ``api`` is a method and ends with ``METHOD =
api.Method(...)`` naming itself; ``get_method(name)`` imports ``jsbir.methods.<name>`` and returns that declaration.

So a new method is one new file here (plus its config, docs page and tests): nothing is listed by hand, and a
module that does not declare a matching ``METHOD`` is an error, never skipped.
"""

from __future__ import annotations

import importlib
import pkgutil

from jsbir.methods.api import EvalSpec, InputSpec, Method

__all__ = ["EvalSpec", "InputSpec", "Method", "available_methods", "get_method"]

_CONTRACT_MODULES = {"api"}


def available_methods() -> list[str]:
    """Names of the method modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _CONTRACT_MODULES)


def get_method(name: str) -> Method:
    """The declaration of method ``name``.

    Raises:
      ValueError: naming the unknown method and the available ones.
      TypeError: the module does not declare ``METHOD = api.Method(name=<its own name>, ...)``.
    """
    if name not in available_methods():
        raise ValueError(f"config.method={name!r} is not one of {available_methods()}")
    module = importlib.import_module(f"{__name__}.{name}")
    method = getattr(module, "METHOD", None)
    if not isinstance(method, Method) or method.name != name:
        raise TypeError(f"method module {module.__name__} must end with METHOD = api.Method(name={name!r}, ...)")
    return method
