"""Method registry: ``zeroshot`` and ``cdul-init`` (no training), ``nola``, ``lafter``, ``latteclip`` and ``cdul``
(trainable).

>>> from labeler.methods import get_method            # doctest: +SKIP
>>> method = get_method("zeroshot")
>>> result = method.run(project, method.params_from({"templates": "simple"}))

The built-in methods are registered here, when the package is imported, so any import of
``labeler.methods`` (or of one of its modules) sees all of them. A new method registers itself with
:func:`register_method` (refused if the name is taken, unless ``replace=True``).
"""

from __future__ import annotations

from .base import METHODS, Method, RunResult, get_method, list_methods, method_defaults, register_method
from .cdul import CDUL, CDULInit
from .lafter import LaFTer
from .latteclip import LatteCLIP
from .nola import NoLA
from .zeroshot import ZeroShot

#: Methods on the roadmap, with the one-line reason they cannot be picked yet (listed as not available).
#: Empty now: every method the product names is built.
PLANNED: dict[str, str] = {}


def _register_builtins() -> None:
    for cls in (ZeroShot, CDULInit, NoLA, LaFTer, LatteCLIP, CDUL):
        register_method(cls)
    for name, why in PLANNED.items():
        METHODS.plan(name, why)


_register_builtins()

__all__ = [
    "METHODS",
    "PLANNED",
    "Method",
    "RunResult",
    "get_method",
    "list_methods",
    "method_defaults",
    "register_method",
]
