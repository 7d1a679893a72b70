"""pandas only for the models that need it.

scikit-learn imports pandas whenever it is installed (``sklearn.utils.fixes`` does
``import pandas`` at import time, as of 1.9), so a worker serving a float-matrix
model would carry pandas (tens of MiB) that it never calls. ``import_sklearn``
imports scikit-learn with a stand-in in ``sys.modules["pandas"]`` and takes it out
again afterwards: scikit-learn keeps the stand-in, which imports the real pandas the
first time an attribute is read from it, and everyone else finds no pandas until
someone imports it. That matters beyond memory: scikit-learn (through narwhals) asks
``sys.modules`` on every call whether pandas is imported, to check whether its input
is a DataFrame, so a stand-in left there would load pandas on the first batch.

A frame model imports pandas when its runtime is built (``load_pandas``), so its
first batch does not pay for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any, Final

PANDAS: Final = "pandas"


class _StandIn(ModuleType):
    """Forwards every attribute it lacks to the real module, imported on first use."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]  # still standing in: make room for the real one
        return getattr(importlib.import_module(self.__name__), name)


def import_sklearn() -> None:
    """Import scikit-learn without importing pandas (when neither is imported yet)."""
    if PANDAS in sys.modules or "sklearn" in sys.modules:
        return
    spec = importlib.util.find_spec(PANDAS)
    if spec is None:
        return  # not installed: scikit-learn does without it; frame models say so
    stand_in = importlib.util.module_from_spec(spec)  # __spec__ set: import statements read it
    stand_in.__class__ = _StandIn
    sys.modules[PANDAS] = stand_in
    try:
        importlib.import_module("sklearn.base")
    finally:
        if sys.modules.get(PANDAS) is stand_in:
            del sys.modules[PANDAS]


def load_pandas() -> ModuleType:
    """pandas, imported now (for a frame model, when it is loaded)."""
    return importlib.import_module(PANDAS)


def pandas_loaded() -> bool:
    """Whether pandas' own code has run in this process."""
    return f"{PANDAS}.core.frame" in sys.modules
