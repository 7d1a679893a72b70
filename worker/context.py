"""Settings -> the scoring context: the one place where a model and a schema are loaded
for scoring, shared by the stream (``run``) and batch mode (``score-file``)."""

from __future__ import annotations

from pathlib import Path

from worker.config import Settings
from worker.core.pipeline import ScoringContext
from worker.core.schema import EventValidator
from worker.mlflow_ref import is_mlflow_model
from worker.model.bundle import ModelBundle
from worker.model.checked import load_checked
from worker.model.store import is_model_folder, read_pointer


def build_context(s: Settings) -> ScoringContext:
    """Load the model (with its self-test) and the schema; either failing is fatal
    (raises ScoringError)."""
    bundle = _bundle(s)
    validator = EventValidator.from_file(Path(s.schema)) if s.schema else None
    return ScoringContext(bundle, validator, s.max_event_bytes, s.event_ts_field or None,
                          s.label_field or None, segment_fields=s.segment_field_list,
                          segment_values=s.feature_stats_segment_values, explain=s.explain)


def _bundle(s: Settings) -> ModelBundle:
    if is_mlflow_model(s.model):  # the only path that imports MLflow (the extra)
        from worker.model.mlflow_source import MlflowSource, load_start

        source = MlflowSource(s.mlflow_tracking_uri, Path(s.mlflow_cache), s.allow_pickle,
                              s.model_threads)
        return load_start(source, s.model, s.start_timeout_s)
    path = Path(s.model)
    if is_model_folder(path):  # a store folder: serve what its pointer names
        path = path / read_pointer(path)
    return load_checked(path, allow_pickle=s.allow_pickle, threads=s.model_threads)
