"""MLflow model versions as bundles: resolve ``models:/NAME@ALIAS``, download the version's
sklearn flavour, and write it with ``write_bundle`` into a local cache folder
(``<cache>/<name>/<version>``), so that it is served and checked like every bundle.

The one module that imports MLflow (the ``mlflow`` extra), and only when a ``models:/``
model is asked for. The model's signature gives the typed features; the self-test sample
(and the reference histogram of its scores) comes from the version's ``input_example``
or, failing that, from a ``scoring-sample.json`` artifact of the version's run (what
``mlflow.log_table(holdout, "scoring-sample.json")`` writes). A version without either
is refused with one line that says what to log.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from worker.errors import ModelLoadError, ScoringError
from worker.mlflow_ref import EXTRA_MISSING, ModelRef, parse_ref
from worker.model.bundle import MANIFEST_NAME, ModelBundle
from worker.model.checked import load_checked
from worker.model.feature_types import Feature, FeatureType
from worker.model.infer import with_strict_categories
from worker.model.manifest import ReferenceHistogram, Task
from worker.model.writer import write_bundle

log = logging.getLogger(__name__)
SAMPLE_ARTIFACT: Final = "scoring-sample.json"
#: Seconds between two attempts to reach the tracking server at start.
START_RETRY_S: Final = 1.0
#: MLflow signature column types -> feature types.
_TYPES: Final[dict[str, FeatureType]] = {
    "double": "number", "float": "number", "long": "integer", "integer": "integer",
    "boolean": "boolean", "string": "string"}
_NOT_FOUND: Final = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
#: The poll is the retry: MLflow's own retries (minutes of back-off by default) would
#: only delay the warning that the tracking server is down. A team's own values win.
# The next poll is the retry; a worker sends no usage telemetry of MLflow's own (clusters are
# often closed to the internet). A team's own values of these variables win.
_CLIENT_DEFAULTS: Final = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                           "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                           "MLFLOW_DISABLE_TELEMETRY": "true",
                           # retrain's stdout is its report, not a place for run links
                           "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class TrackingUnavailable(ScoringError):
    """The tracking server did not answer (a retry may succeed)."""

    exit_status = 1
    hint = "check --mlflow-tracking-uri and that the MLflow server is up"


def import_mlflow() -> Any:
    """The ``mlflow`` module; ConfigError naming the extra when it is not installed."""
    try:
        import mlflow
    except ImportError:
        from worker.errors import ConfigError

        raise ConfigError(EXTRA_MISSING.format(model="models:/...")) from None
    return mlflow


@dataclass
class MlflowSource:
    """One tracking server (``tracking_uri``; empty: MLflow's own MLFLOW_TRACKING_URI or
    default) and the cache folder of bundles made from its versions."""

    tracking_uri: str
    cache: Path
    #: Load versions that MLflow serialized with (cloud)pickle, which runs any code the file
    #: holds (the worker's allow_pickle); skops-serialized versions load either way.
    allow_pickle: bool = False
    #: The worker's model_threads, applied to each version as it is loaded.
    threads: int = 1
    _client: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for var, value in _CLIENT_DEFAULTS.items():
            os.environ.setdefault(var, value)
        mlflow = import_mlflow()
        uri = self.tracking_uri or None
        self._client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        if uri:  # the artifact download of models:/ URIs reads the process-wide registry
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
        self.cache = Path(self.cache).expanduser()

    def resolve(self, ref: ModelRef) -> str:
        """The version ``ref`` names now (its alias resolved); raises TrackingUnavailable
        or ModelLoadError (no such model, alias or version)."""
        if ref.alias is None:
            return str(self._call(self._client.get_model_version, ref.name, ref.version,
                                  what=ref.uri).version)
        mv = self._call(self._client.get_model_version_by_alias, ref.name, ref.alias,
                        what=ref.uri)
        return str(mv.version)

    def bundle(self, name: str, version: str) -> Path:
        """The bundle folder of ``name`` ``version``, made (downloaded, converted and
        checked) unless the cache has it; raises ModelLoadError or TrackingUnavailable."""
        out = self.cache / name / version
        if (out / MANIFEST_NAME).is_file():
            return out
        uri = ModelRef(name).version_uri(version)
        mv = self._call(self._client.get_model_version, name, version, what=uri)
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=out.parent))
        try:
            local = self._download(uri, work / "mlflow")
            made = convert(local, work / "bundle", name=name, version=version,
                           allow_pickle=self.allow_pickle,
                           sample=lambda: self._run_sample(mv.run_id, work / "sample"),
                           lineage={"mlflow": {"model_uri": uri, "run_id": mv.run_id,
                                               "source": mv.source}})
            try:
                os.replace(made, out)
            except OSError:  # another worker made it first
                if not (out / MANIFEST_NAME).is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return out

    def _download(self, uri: str, dst: Path) -> Path:
        mlflow = import_mlflow()
        dst.mkdir(parents=True)
        path = self._call(mlflow.artifacts.download_artifacts, artifact_uri=uri,
                          dst_path=str(dst), what=uri)
        return Path(path)

    def _run_sample(self, run_id: str | None, dst: Path) -> pd.DataFrame | None:
        """The run's ``scoring-sample.json`` (a table), or None when there is none."""
        if not run_id:
            return None
        mlflow = import_mlflow()
        dst.mkdir(parents=True)
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                       artifact_path=SAMPLE_ARTIFACT,
                                                       dst_path=str(dst))
        except Exception as exc:
            if _not_found(exc) or isinstance(exc, OSError):
                return None
            raise TrackingUnavailable(f"run {run_id}: {_one_line(exc)}") from None
        return _table(json.loads(Path(path).read_text()))

    @staticmethod
    def _call(fn: Any, *args: Any, what: str, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if _not_found(exc):
                raise ModelLoadError(f"{what}: not in the MLflow registry "
                                     f"({_one_line(exc)})") from None
            raise TrackingUnavailable(f"{what}: {_one_line(exc)}") from None


def load_version(source: MlflowSource, name: str, version: str) -> ModelBundle:
    """``name`` ``version`` from MLflow as a bundle, with every check (the self-test)."""
    bundle = load_checked(source.bundle(name, version), threads=source.threads)
    if (bundle.name, bundle.version) != (name, version):
        raise ModelLoadError(f"{bundle.path} holds {bundle.name} {bundle.version}")
    return bundle


def load_start(source: MlflowSource, model: str, timeout_s: float = 0.0,
               sleep: Callable[[float], None] = time.sleep,
               monotonic: Callable[[], float] = time.monotonic) -> ModelBundle:
    """The bundle to start with: the version ``model`` (models:/...) names now. A tracking
    server that does not answer is asked again every second for ``timeout_s`` (the
    worker's start_timeout_s, as for the broker: both may come up together); then
    TrackingUnavailable, one line. A model, alias or version that is not there is
    refused at once (ModelLoadError): waiting would not bring it."""
    ref = parse_ref(model)
    deadline = monotonic() + timeout_s
    warned = False
    while True:
        try:
            return load_version(source, ref.name, source.resolve(ref))
        except TrackingUnavailable as exc:
            if timeout_s <= 0:
                raise
            if monotonic() + START_RETRY_S > deadline:
                raise TrackingUnavailable(f"MLflow did not answer within {timeout_s:g}s "
                                          f"(start_timeout_s): {exc}") from None
            if not warned:
                log.warning("waiting up to %gs for MLflow: %s", timeout_s, exc)
                warned = True
            sleep(START_RETRY_S)


def convert(local: Path, out: Path, *, name: str, version: str, sample: Any,
            lineage: dict[str, Any], allow_pickle: bool = False) -> Path:
    """A downloaded MLflow model folder -> a checked bundle in ``out``. ``sample``: a
    callable giving the logged sample table (or None), asked only without an
    input_example. Raises ModelLoadError with one line."""
    from mlflow.models import Model
    from mlflow.sklearn import load_model

    what = f"models:/{name}/{version}"
    meta = Model.load(str(local / "MLmodel"))
    if "sklearn" not in meta.flavors:
        raise ModelLoadError(f"{what} has no sklearn flavour (log it with "
                             "mlflow.sklearn.log_model)")
    fmt = meta.flavors["sklearn"].get("serialization_format", "cloudpickle")
    if fmt != "skops" and not allow_pickle:
        raise ModelLoadError(
            f"{what} is serialized with {fmt}, and unpickling runs any code the file holds: "
            "log it with mlflow.sklearn.log_model(..., serialization_format='skops'), or set "
            "allow_pickle if you trust the registry")
    specs = signature_features(meta.signature, what)
    rows = meta.load_input_example(str(local))
    rows = _table(rows) if rows is not None else sample()
    if rows is None or len(rows) == 0:
        raise ModelLoadError(
            f"{what} has no input_example and its run no {SAMPLE_ARTIFACT}: log holdout rows "
            f"with mlflow.sklearn.log_model(..., input_example=X_holdout[:64]) or "
            f"mlflow.log_table(X_holdout, '{SAMPLE_ARTIFACT}')")
    missing_columns = [f.name for f in specs if f.name not in rows.columns]
    if missing_columns:
        raise ModelLoadError(f"{what}: the sample rows lack the signature's columns "
                             f"{missing_columns}")
    rows = _typed(rows[[f.name for f in specs]], specs)
    estimator = load_model(str(local))  # type: ignore[no-untyped-call]
    task = task_of(estimator)
    try:
        return write_bundle(out, estimator, name=name, version=version, task=task,
                            sample=rows, features=with_strict_categories(estimator, specs),
                            reference_histogram=_reference(estimator, task, rows),
                            lineage=lineage)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{what}: {_one_line(exc)}") from None


def signature_features(signature: Any, what: str) -> tuple[Feature, ...]:
    """Typed features from the signature's named input columns; each may be missing (the
    writer keeps that only where the estimator really scores a missing value)."""
    inputs = None if signature is None else signature.inputs
    if inputs is None or not inputs.has_input_names():
        raise ModelLoadError(f"{what} has no signature with named columns: log it with "
                             "signature=infer_signature(X_train) (a DataFrame)")
    out = []
    for col in inputs.inputs:
        kind = _TYPES.get(str(getattr(col.type, "name", col.type)))
        if kind is None:
            raise ModelLoadError(f"{what}: input {col.name!r} has type {col.type}, which "
                                 f"events cannot carry (use one of {sorted(_TYPES)})")
        out.append(Feature(col.name, kind, missing=True))
    return tuple(out)


def task_of(estimator: Any) -> Task:
    classes = getattr(estimator, "classes_", None)
    if not hasattr(estimator, "predict_proba") or classes is None:
        return "regression"
    return "binary" if len(classes) == 2 else "multiclass"


def _reference(estimator: Any, task: Task, rows: pd.DataFrame) -> ReferenceHistogram | None:
    """The sample's positive-class scores (what the monitor compares live scores with)."""
    if task != "binary":
        return None
    return ReferenceHistogram.from_scores(np.asarray(estimator.predict_proba(rows))[:, 1])


def _typed(rows: pd.DataFrame, specs: tuple[Feature, ...]) -> pd.DataFrame:
    """Numbers as numbers (a JSON example may hold them as text); strings stay as pandas
    read them, which is how the worker's own frames hold them (worker/core/frames.py)."""
    out = rows.copy()
    for f in specs:
        if f.type in ("number", "integer"):
            out[f.name] = pd.to_numeric(out[f.name], errors="coerce")
    return out


def _table(data: Any) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return pd.DataFrame(data["data"], columns=data["columns"])
    return pd.DataFrame(data)


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) in _NOT_FOUND


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:500]
