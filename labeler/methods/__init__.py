"""Method registry: ``zeroshot`` and ``cdul-init`` (no training), ``nola``, ``lafter`` and ``cdul`` (trainable) now;
``latteclip`` as it lands.

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
from .nola import NoLA
from .zeroshot import ZeroShot

#: Methods on the roadmap, with the one-line reason they cannot be picked yet (listed as not available).
PLANNED: dict[str, str] = {
    "latteclip": "LatteCLIP (LMM descriptions + prototypes) is not implemented yet",
}

for _cls in (ZeroShot, CDULInit, NoLA, LaFTer, CDUL):
    register_method(_cls)
for _name, _why in PLANNED.items():
    METHODS.plan(_name, _why)
del _cls, _name, _why

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
