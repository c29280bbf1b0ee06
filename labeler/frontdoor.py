"""Modules that can be called like their main function: ``labeler.export(...)`` is
:func:`labeler.export.export`, ``labeler.train(...)`` is :func:`labeler.train.runner.train`.

The front door (``from labeler import export, train``) names those functions, but ``labeler.export`` and
``labeler.train`` are also a module and a package (``import labeler.train.loop`` must keep working), and
Python binds a submodule to its name in the parent package once it is imported. So each of the two makes
itself callable (:func:`make_callable`): whichever ``from labeler import export`` finds, it can be called.
"""

from __future__ import annotations

import sys
import types


class CallableModule(types.ModuleType):
    """A module whose call runs its function of the same name (``labeler.export`` → ``export``)."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rsplit(".", 1)[-1])(*args, **kwargs)


def make_callable(name: str) -> None:
    """Make the (imported) module ``name`` callable: calling it calls its attribute of the same last name."""
    sys.modules[name].__class__ = CallableModule
