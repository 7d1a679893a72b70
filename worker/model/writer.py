"""``write_bundle``: a fitted estimator -> a bundle that the worker serves as it is.

One call writes the artifact (skops by default, recording the types it needs beyond
skops' defaults; or ONNX with the scikit-learn original beside it), the typed feature
list (inferred from the sample's columns unless given), a self-test sample of rows as
events with the scores the estimator itself gave them, and the library versions.
Then it loads what it wrote with every check the worker makes, the self-test
included: a bundle that would be refused at load is never left behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from worker.errors import ModelLoadError
from worker.model import runtimes
from worker.model.bundle import MANIFEST_NAME, sha256_file, write_manifest
from worker.model.calibration import Calibration, calibrate_reference
from worker.model.feature_types import Feature, is_missing
from worker.model.infer import infer_features, is_frame, probe_missing
from worker.model.manifest import Manifest, Reference, ReferenceHistogram, Task, check_classes
from worker.model.profile import Profile, profile_of
from worker.model.runtimes import DEFAULT_RUNTIME
from worker.model.sample import SelfTest, current_versions

SAMPLE_ROWS: Final = 64
_PROBE_ROWS: Final = 8


def write_bundle(
    out_dir: Path,
    estimator: Any,
    *,
    name: str,
    version: str,
    task: Task,
    sample: Any,
    features: Sequence[Any] | None = None,
    fmt: str = "skops",
    runtime: str = DEFAULT_RUNTIME,
    threshold: float | None = None,
    metrics: Mapping[str, float] | None = None,
    reference_histogram: ReferenceHistogram | Mapping[str, Any] | None = None,
    created_at: str | None = None,
    sample_rows: int = SAMPLE_ROWS,
    lineage: Mapping[str, Any] | None = None,
    reference: Any = None,
    reference_labels: Any = None,
) -> Path:
    """Write ``estimator`` and its manifest into ``out_dir``; return the folder.

    ``sample``: holdout rows (a DataFrame, or an array for an estimator fitted on one);
    up to ``sample_rows`` of them become the bundle's self-test, and their columns tell
    each feature's type unless ``features`` gives them (names, or mappings/Features
    with ``name``, ``type``, ``missing``, ``categories``). Raises ValueError when the
    bundle would not pass the checks the worker makes at load. ``lineage`` (JSON-
    serialisable) says where the model came from; ``scoring-worker retrain`` writes it.
    ``reference``: input rows to profile each input on (a holdout, or the training frame
    when there are no labels), or a ready ``Profile``; the monitor's feature drift and
    data-quality figures compare live inputs with it (worker/model/profile.py). None: no
    profile. With their true classes in ``reference_labels``, the rows (a labeled holdout,
    never training rows) also fit a binary model's calibration map (the monitor's estimated
    figures, worker/model/calibration.py).
    """
    out_dir = Path(out_dir)
    kind = runtimes.get(runtime)
    specs = _checked_missing(estimator, task, sample, infer_features(estimator, sample, features))
    rows = _sample_rows(sample, specs, sample_rows)
    written = kind.dump(estimator, out_dir, fmt, specs, rows)
    classes = kind.classes_of(estimator) if task != "regression" else None
    if isinstance(reference_histogram, Mapping):
        reference_histogram = ReferenceHistogram.parse(dict(reference_histogram))
    manifest = Manifest(
        name=name, version=version, task=task, features=tuple(f.name for f in specs),
        artifact=written.artifact.name, sha256=sha256_file(written.artifact),
        threshold=0.5 if threshold is None else float(threshold),
        classes=None if classes is None else check_classes(classes),
        metrics={k: float(v) for k, v in (metrics or {}).items() if math.isfinite(float(v))},
        reference_histogram=reference_histogram, created_at=created_at, runtime=runtime,
        feature_specs=specs, trusted_types=written.trusted_types,
        self_test=None,
        libraries=current_versions(_extra_libraries(runtime, sample)),
        reference=None if written.reference is None else Reference(
            written.reference.name, sha256_file(written.reference)),
        lineage=None if lineage is None else dict(lineage),
        profile=_profile(reference, specs),
    )
    if reference_labels is not None:
        manifest = replace(manifest, calibration=_calibration(
            estimator, manifest, reference, reference_labels, is_frame(sample)))
    outputs = _outputs(estimator, task, rows, lambda: kind.wrap(manifest, estimator))
    manifest = replace(manifest, self_test=SelfTest(_events(rows, specs), outputs))
    Manifest.parse(manifest.to_dict())  # a bundle we write is one we accept
    write_manifest(out_dir, manifest)
    _verify(out_dir, fmt)
    return out_dir


def _calibration(estimator: Any, manifest: Manifest, reference: Any, labels: Any,
                 as_frame: bool) -> Calibration:
    if manifest.task != "binary" or manifest.classes is None:
        raise ValueError("reference_labels: a calibration map is fitted for binary models only")
    if reference is None or isinstance(reference, Profile):
        raise ValueError("reference_labels needs reference= as the labeled holdout rows")
    return calibrate_reference(
        estimator, reference, labels, features=manifest.features, classes=manifest.classes,
        threshold=manifest.threshold, holdout=dict(manifest.metrics), as_frame=as_frame)


def _profile(reference: Any, specs: Sequence[Feature]) -> Profile | None:
    if reference is None or isinstance(reference, Profile):
        return reference
    return profile_of(reference, specs)


def _verify(out_dir: Path, fmt: str) -> None:
    from worker.model.checked import load_checked  # above the scoring core, as it must be

    try:
        load_checked(out_dir, allow_pickle=fmt == "joblib")
    except ModelLoadError as exc:
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # no half-good bundle left behind
        raise ValueError(f"the bundle would be refused at load: {exc}") from None


def _checked_missing(
    estimator: Any, task: Task, sample: Any, specs: tuple[Feature, ...]
) -> tuple[Feature, ...]:
    """Keep ``missing`` only where the estimator really scores a missing value."""
    rows = sample.iloc[:_PROBE_ROWS] if is_frame(sample) else np.asarray(sample)[:_PROBE_ROWS]
    out = []
    for position, f in enumerate(specs):
        if f.missing:
            problem = probe_missing(estimator, task, rows, f, position)
            if problem is not None:
                f = Feature(f.name, f.type, False, f.categories)
        out.append(f)
    return tuple(out)


def _sample_rows(sample: Any, specs: Sequence[Feature], limit: int) -> Any:
    """Up to ``limit`` rows: one with a missing value per feature that has one, then the
    first rows, so the self-test covers missing values too."""
    n = len(sample)
    if n == 0:
        raise ValueError("sample has no rows: give holdout rows for the bundle's self-test")
    picked: list[int] = []
    for position, f in enumerate(specs):
        column = _values(sample, f.name, position)
        first = next((i for i, v in enumerate(column) if is_missing(v)), None)
        if first is not None and first not in picked:
            picked.append(first)
    picked += [i for i in range(n) if i not in picked][: max(0, limit - len(picked))]
    picked = sorted(picked[:limit])
    return sample.iloc[picked] if is_frame(sample) else np.asarray(sample)[picked]


def _values(data: Any, name: str, position: int) -> list[Any]:
    column = data[name] if is_frame(data) else np.asarray(data)[:, position]
    values: list[Any] = column.tolist()
    return values


def _events(rows: Any, specs: Sequence[Feature]) -> tuple[dict[str, Any], ...]:
    columns = [_values(rows, f.name, k) for k, f in enumerate(specs)]
    events = []
    for i in range(len(rows)):
        event: dict[str, Any] = {"id": f"self-test-{i}"}
        for f, column in zip(specs, columns, strict=True):
            event[f.name] = _plain(column[i], f)
        events.append(event)
    return tuple(events)


def _plain(value: Any, f: Feature) -> Any:
    """A JSON value for one cell: null for missing, Python scalars otherwise."""
    if is_missing(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if f.type == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if f.type == "boolean":
        return bool(value)
    if f.type == "number" and not isinstance(value, bool):
        return float(value) if isinstance(value, float) else value
    return value


def _outputs(estimator: Any, task: Task, rows: Any,
             runtime: Callable[[], Any]) -> tuple[Any, ...]:
    """The estimator's own outputs on ``rows``; a model without scikit-learn's methods
    (another runtime kind) is scored by its runtime on the rows as a float matrix."""
    method = getattr(estimator, "predict" if task == "regression" else "predict_proba", None)
    if method is not None:
        out = np.asarray(method(rows), dtype=np.float64)
    else:
        matrix = np.asarray(rows, dtype=np.float64)
        out = np.asarray(runtime().predict(matrix), dtype=np.float64)
    if task == "regression" and out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    return tuple(out.tolist())


def _extra_libraries(runtime: str, sample: Any) -> tuple[str, ...]:
    extra = ("pandas",) if is_frame(sample) else ()
    return (*extra, "onnxruntime", "skl2onnx") if runtime == "onnx" else extra
