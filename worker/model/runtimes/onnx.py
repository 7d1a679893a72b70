"""The ONNX Runtime runtime: a scikit-learn model converted with skl2onnx, scored by
onnxruntime.

Writing converts the fitted estimator (classifiers without ZipMap, so probabilities
come back as one float matrix) and keeps the scikit-learn original beside it as a
``.skops`` reference. An estimator fitted on an array of numbers gets one matrix input
``X``; one fitted on a DataFrame, or with a feature that is not a number, gets one input
per feature, in the manifest's order, when it starts with a ColumnTransformer (strings
as string tensors, integers as int64, booleans as bool; a feature that may be missing
travels as a float so that it can hold NaN); any other model gets one matrix input
``X``. Numbers are doubles or floats, whichever converts, loads and comes closer to the
estimator's own outputs on the sample (tree ensembles compare in float). The bundle's
self-test, run at write time and at every load, then tells whether the ONNX outputs
are within 1e-5 of scikit-learn's on the sample, and the bundle is refused otherwise.
onnxruntime, skl2onnx and onnx are imported only by bundles that use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from worker.errors import describe
from worker.model.feature_types import Feature
from worker.model.manifest import ClassLabel, Manifest, ManifestError, Task
from worker.model.runtimes import FloatArray, LoadOptions, ModelRuntime, Written, register
from worker.model.runtimes.sklearn import dump_sklearn, plain

TOLERANCE: Final = 1e-5
MATRIX_INPUT: Final = "X"
_NUMPY: Final = {"tensor(double)": np.float64, "tensor(float)": np.float32,
                 "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
                 "tensor(string)": object}


@dataclass(frozen=True, slots=True)
class _Input:
    name: str
    dtype: Any
    #: Positions of the manifest's features that feed it (one, or all for a matrix).
    columns: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OnnxRuntime:
    session: Any
    task: Task
    inputs: tuple[_Input, ...]
    output: str
    input: str = "columns"
    tolerance: float = TOLERANCE

    @property
    def model(self) -> Any:
        return self.session

    def predict(self, matrix: Any) -> FloatArray:
        arrays = matrix.arrays
        feed = {i.name: _tensor([arrays[c] for c in i.columns], i.dtype) for i in self.inputs}
        out = np.asarray(self.session.run([self.output], feed)[0], dtype=np.float64)
        return out[:, 0] if self.task == "regression" and out.ndim == 2 else out


def _tensor(arrays: list[Any], dtype: Any) -> Any:
    if dtype is object:  # strings; a missing one (NaN) is no string ONNX can take
        column = arrays[0]
        return np.array([v if isinstance(v, str) else "" for v in column.tolist()],
                        dtype=object).reshape(-1, 1)
    return np.column_stack([np.asarray(a, dtype=np.float64).astype(dtype)
                            if a.dtype == object else a.astype(dtype) for a in arrays])


class OnnxKind:
    name: Final = "onnx"
    suffixes: Final = (".onnx",)

    def load(
        self, manifest: Manifest, data: bytes, options: LoadOptions
    ) -> tuple[ModelRuntime, tuple[ClassLabel, ...]]:
        session = _session(data, options.threads)
        runtime = _runtime(session, manifest)
        classes = () if manifest.task == "regression" else (manifest.classes or ())
        if manifest.task != "regression" and len(classes) < 2:
            raise ManifestError("an ONNX classifier's manifest must list its classes")
        return runtime, tuple(classes)

    def classes_of(self, model: Any) -> list[Any] | None:
        raw = getattr(model, "classes_", None)
        return None if raw is None else plain(raw)

    def wrap(self, manifest: Manifest, model: Any) -> ModelRuntime:
        return _runtime(model, manifest)

    def dump(self, model: Any, out_dir: Path, fmt: str, features: Sequence[Feature],
             sample: Any) -> Written:
        reference = dump_sklearn(model, out_dir, "skops")
        artifact = out_dir / "model.onnx"
        artifact.write_bytes(convert(model, features, sample))
        return Written(artifact, (), reference.artifact)


def convert(model: Any, features: Sequence[Feature], sample: Any) -> bytes:
    """The ONNX graph of ``model`` whose outputs on ``sample`` come closest to the
    estimator's (double or float numbers); ValueError naming why when none converts."""
    problems, best = [], None
    expected = _estimator_output(model, sample)
    for precision in ("double", "float"):
        try:
            data: bytes = _convert(model, features, precision).SerializeToString()
            session = _session(data)
            out = np.asarray(session.run([_output_name(session)],
                                         _sample_feed(session, sample, features))[0])
            diff = float(np.abs(out.reshape(expected.shape) - expected).max())
        except Exception as exc:  # a converter or a runtime refusing this precision
            problems.append(f"{precision}: {describe(exc)}")
            continue
        if best is None or diff < best[0]:
            best = (diff, data)
    if best is None:
        raise ValueError(f"cannot convert {type(model).__name__} to ONNX "
                         f"({'; '.join(problems)})")
    return best[1]


def _estimator_output(model: Any, sample: Any) -> Any:
    proba = getattr(model, "predict_proba", None)
    return np.asarray(proba(sample) if proba is not None else model.predict(sample),
                      dtype=np.float64)


def _output_name(session: Any) -> str:
    names = [o.name for o in session.get_outputs()]
    return "probabilities" if "probabilities" in names else "variable"


def _sample_feed(session: Any, sample: Any, features: Sequence[Feature]) -> dict[str, Any]:
    """The ONNX inputs for the estimator's own rows (a DataFrame or an array)."""
    frame = hasattr(sample, "columns")
    matrix = np.asarray(sample.to_numpy() if frame else sample, dtype=object)
    feed = {}
    for node, columns in _bindings(session, features):
        dtype = _NUMPY[node.type]
        arrays = [np.asarray(matrix[:, c]) for c in columns]
        feed[node.name] = _tensor(arrays, dtype)
    return feed


def _convert(model: Any, features: Sequence[Feature], precision: str) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common import data_types as t

    number = t.DoubleTensorType if precision == "double" else t.FloatTensorType
    if _per_column(model):
        kinds = {"string": t.StringTensorType, "boolean": t.BooleanTensorType,
                 "integer": t.Int64TensorType}
        initial = [(f.name, (number if f.missing else kinds.get(f.type, number))([None, 1]))
                   for f in features]
    else:
        initial = [(MATRIX_INPUT, number([None, len(features)]))]
    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    return convert_sklearn(model, initial_types=initial, options=options)


def _per_column(model: Any) -> bool:
    """One input per feature when the model starts by picking columns (ColumnTransformer)."""
    steps = getattr(model, "steps", None)
    first = steps[0][1] if steps else model
    return hasattr(first, "transformers")


def _bindings(session: Any, features: Sequence[Feature]) -> list[tuple[Any, tuple[int, ...]]]:
    """Each ONNX input with the manifest positions that feed it. Per-column inputs follow
    the manifest's order (skl2onnx may rename them: "a b" becomes "a_b")."""
    nodes = session.get_inputs()
    if len(nodes) == 1 and nodes[0].name == MATRIX_INPUT:
        return [(nodes[0], tuple(range(len(features))))]
    if len(nodes) != len(features):
        raise ManifestError(f"ONNX model has {len(nodes)} inputs, the manifest "
                            f"{len(features)} features")
    return [(node, (k,)) for k, node in enumerate(nodes)]


def _session(data: bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # The worker's model_threads (worker/model/runtimes/threads.py): the machine's cores
    # also run librdkafka. One graph runs at a time, so inter-op needs no pool.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ManifestError(f"onnxruntime cannot load the model: {describe(exc)}") from None


def _runtime(session: Any, manifest: Manifest) -> OnnxRuntime:
    inputs = []
    for node, columns in _bindings(session, manifest.feature_specs):
        dtype = _NUMPY.get(node.type)
        if dtype is None:
            raise ManifestError(f"ONNX input {node.name!r} has type {node.type}, not supported")
        inputs.append(_Input(node.name, dtype, columns))
    outputs = [o.name for o in session.get_outputs()]
    want = "variable" if manifest.task == "regression" else "probabilities"
    if want not in outputs:
        raise ManifestError(f"ONNX model has outputs {outputs}, expected {want!r} "
                            "(classifiers converted with zipmap=False)")
    return OnnxRuntime(session, manifest.task, tuple(inputs), want)


register(OnnxKind())
