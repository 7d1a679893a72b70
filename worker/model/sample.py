"""What a bundle carries to check itself at every load: a sample of events with the
scores the estimator gave them when the bundle was written, and the library versions
it was written with.

The sample is stored as events (JSON objects, as they would arrive on the input
topic) so that checking it runs the very decode, validation, feature and model code
of the stream (worker/core/selftest.py).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

#: Libraries whose version is recorded in a bundle and compared at load.
LIBRARIES: Final = ("scikit-learn", "numpy", "skops")
_OPTIONAL: Final = ("pandas", "onnxruntime", "skl2onnx")


class SampleError(ValueError):
    """A self-test sample that cannot be used; the message is one short line."""


@dataclass(frozen=True, slots=True)
class SelfTest:
    """``events[i]`` scored ``outputs[i]``: a list of class probabilities (classifiers)
    or a value (regression), as the estimator's own predict_proba/predict gave them."""

    events: tuple[dict[str, Any], ...]
    outputs: tuple[Any, ...]

    @classmethod
    def parse(cls, data: object) -> SelfTest:
        if not isinstance(data, dict):
            raise SampleError("'self_test' must be an object with events and outputs")
        events, outputs = data.get("events"), data.get("outputs")
        if not isinstance(events, list) or not events or not all(
            isinstance(e, dict) and isinstance(e.get("id"), str) for e in events
        ):
            raise SampleError("self_test.events must be a non-empty list of events with ids")
        if not isinstance(outputs, list) or len(outputs) != len(events):
            raise SampleError("self_test.outputs must have one entry per event")
        if not all(_finite(o) for o in outputs):
            raise SampleError("self_test.outputs must be finite numbers or lists of them")
        return cls(tuple(events), tuple(outputs))

    def to_dict(self) -> dict[str, Any]:
        return {"events": list(self.events), "outputs": list(self.outputs)}


def _finite(value: object) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_finite(v) for v in value)
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def current_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """This interpreter's and these libraries' versions (``extra``: when installed)."""
    out = {"python": platform.python_version()}
    for name in (*LIBRARIES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name in LIBRARIES:
                raise
    return out


def version_differences(recorded: Mapping[str, str]) -> list[str]:
    """``name bundle!=here`` for each recorded library whose version differs here."""
    here = current_versions(tuple(n for n in _OPTIONAL if n in recorded))
    return [f"{name} {want}!={here.get(name, 'absent')}"
            for name, want in sorted(recorded.items()) if here.get(name) != want]


def parse_libraries(data: object) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise SampleError("'libraries' must be an object of library -> version")
    return dict(data)
