"""A toy model runtime: logistic weights in a JSON artifact (``model.lin``).

Added the way ONNX or another library would be: one module with a RuntimeKind, one
register call; bundles name it with ``"runtime": "toy-linear"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from worker.model.feature_types import Feature
from worker.model.manifest import ClassLabel, Manifest, ManifestError
from worker.model.runtimes import FloatArray, LoadOptions, Written, register


class LinearModel:
    def __init__(self, weights: list[float], bias: float) -> None:
        self.weights, self.bias = np.array(weights, dtype=np.float64), float(bias)

    def proba(self, matrix: FloatArray) -> FloatArray:
        p = 1.0 / (1.0 + np.exp(-(matrix @ self.weights + self.bias)))
        return np.column_stack([1.0 - p, p])


class LinearRuntime:
    input = "float64"  # the scoring core builds a float matrix for it
    tolerance = 1e-12  # its self-test: outputs as recorded when the bundle was written

    def __init__(self, model: LinearModel) -> None:
        self._model = model

    @property
    def model(self) -> Any:
        return self._model

    def predict(self, matrix: FloatArray) -> FloatArray:
        return self._model.proba(matrix)


class LinearKind:
    name = "toy-linear"
    suffixes = (".lin",)

    def load(self, manifest: Manifest, data: bytes,
             options: LoadOptions) -> tuple[LinearRuntime, tuple[ClassLabel, ...]]:
        spec = orjson.loads(data)
        if len(spec["weights"]) != len(manifest.features):
            raise ManifestError(f"{len(spec['weights'])} weights for "
                                f"{len(manifest.features)} features")
        return self.wrap(manifest, LinearModel(spec["weights"], spec["bias"])), (0, 1)

    def dump(self, model: Any, out_dir: Path, fmt: str, features: Sequence[Feature],
             sample: Any) -> Written:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.lin"
        path.write_bytes(orjson.dumps({"weights": model.weights.tolist(), "bias": model.bias}))
        return Written(path)

    def classes_of(self, model: Any) -> list[Any] | None:
        return [0, 1]

    def wrap(self, manifest: Manifest, model: Any) -> LinearRuntime:
        return LinearRuntime(model)


register(LinearKind())
