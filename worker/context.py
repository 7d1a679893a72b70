"""Settings -> the scoring context: the one place where a model and a schema are loaded
for scoring, shared by the stream (``run``) and batch mode (``score-file``)."""

from __future__ import annotations

from pathlib import Path

from worker.config import Settings
from worker.core.pipeline import ScoringContext
from worker.core.schema import EventValidator
from worker.model.checked import load_checked
from worker.model.store import is_model_folder, read_pointer


def build_context(s: Settings) -> ScoringContext:
    """Load the model (with its self-test) and the schema; either failing is fatal
    (raises ScoringError)."""
    path = Path(s.model)
    if is_model_folder(path):  # a store folder: serve what its pointer names
        path = path / read_pointer(path)
    bundle = load_checked(path, allow_pickle=s.allow_pickle, threads=s.model_threads)
    validator = EventValidator.from_file(Path(s.schema)) if s.schema else None
    return ScoringContext(bundle, validator, s.max_event_bytes, s.event_ts_field or None,
                          s.label_field or None)  # fmt: skip
