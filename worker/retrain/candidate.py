"""The candidate: a fresh clone of the champion's estimator, fit on the training rows, and
written as a full bundle through ``write_bundle``: the champion's typed features, a
self-test sample of holdout rows, the reference histogram, the training rows' input
profile, holdout metrics and lineage.

Only scikit-learn estimators are retrained: ``sklearn.base.clone`` keeps the pipeline
and every hyperparameter and drops the fitted state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from worker.errors import RetrainError, describe
from worker.model.bundle import ModelBundle
from worker.model.calibration import MIN_REFERENCE_ROWS
from worker.model.infer import refit_features
from worker.model.manifest import ReferenceHistogram
from worker.model.writer import write_bundle

log = logging.getLogger(__name__)


def seeded_clone(estimator: Any, seed: int) -> Any:
    """An unfitted copy with the same hyperparameters. Each ``random_state`` left unset
    (None, or a shared RandomState) is set to ``seed`` so that a run can be repeated
    exactly; an integer the team chose is kept."""
    fresh = clone(estimator)
    unset = {name: seed for name, value in fresh.get_params(deep=True).items()
             if name.rsplit("__", 1)[-1] == "random_state"
             and (value is None or isinstance(value, np.random.RandomState))}
    if unset:
        fresh.set_params(**unset)
    return fresh


def fit(champion: ModelBundle, matrix: Any, y: Any, seed: int) -> Any:
    """The candidate fitted on ``matrix`` (the rows as the pipeline builds them) and ``y``."""
    if champion.manifest.runtime != "sklearn":
        raise RetrainError(f"retrain fits scikit-learn models; {champion.name} {champion.version}"
                           f" uses the {champion.manifest.runtime} runtime")
    model = seeded_clone(champion.estimator, seed)
    try:
        return model.fit(matrix, y)
    except Exception as exc:  # the estimator's own complaint, in one line
        raise RetrainError(f"fitting a clone of {champion.name} {champion.version} failed: "
                           f"{describe(exc)}") from None


def next_version(existing: Iterable[str]) -> str:
    """One more than the highest numeric version in the store."""
    versions = list(existing)
    if not versions or not all(v.isdigit() for v in versions):
        raise RetrainError(f"cannot number the candidate after versions {sorted(versions)} "
                           "(give --version)")
    return str(max(int(v) for v in versions) + 1)


def write_candidate(
    out_dir: Path,
    model: Any,
    champion: ModelBundle,
    *,
    version: str,
    sample: Any,
    threshold: float,
    metrics: Mapping[str, float],
    reference: ReferenceHistogram,
    lineage: Mapping[str, Any],
    created_at: str,
    labels: Sequence[Any] | None = None,
    profile_rows: Any = None,
) -> Path:
    """The candidate's bundle in ``out_dir``: the champion's name, task, typed features,
    format and runtime; its own threshold, holdout metrics, reference histogram, lineage,
    and ``sample`` (holdout rows as the worker builds them) for its self-test. A binary
    candidate's calibration map and its inputs' reference profile are fitted on the same
    holdout rows and their ``labels`` when there are enough of them; otherwise the profile
    comes from ``profile_rows`` (the training rows). A bundle that would fail its own load
    checks is a RetrainError."""
    fmt = "joblib" if champion.manifest.artifact.endswith(".joblib") else "skops"
    try:
        return write_bundle(
            out_dir, model, name=champion.name, version=version, task=champion.task,
            sample=sample, features=refit_features(model, champion.manifest.feature_specs),
            fmt=fmt, threshold=threshold, metrics=metrics, reference_histogram=reference,
            created_at=created_at, runtime=champion.manifest.runtime, lineage=lineage,
            **_reference_rows(champion, sample, labels, profile_rows),
        )
    except ValueError as exc:
        why = " ".join(str(exc).split())
        raise RetrainError(f"the candidate cannot be written as a bundle: {why}") from None


def _reference_rows(champion: ModelBundle, sample: Any, labels: Sequence[Any] | None,
                    profile_rows: Any) -> dict[str, Any]:
    """write_bundle's reference arguments: the labeled holdout when it can hold a
    calibration map (it is profiled too), else the training rows for the profile alone."""
    if champion.task != "binary" or labels is None:
        return {"reference": profile_rows}
    if len(labels) < MIN_REFERENCE_ROWS:
        log.warning("the candidate gets no calibration map: its holdout has %d labeled rows, "
                    "fewer than %d; the monitor will not estimate its figures",
                    len(labels), MIN_REFERENCE_ROWS)
        return {"reference": profile_rows}
    return {"reference": sample, "reference_labels": list(labels)}
