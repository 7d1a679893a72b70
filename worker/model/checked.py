"""Loading a bundle with every check, its self-test included: the one way the worker,
``score-file``, ``models add``/``promote``/``rollback`` and hot reload load a model.

This module sits above the scoring core (the self-test runs the stream's own code,
worker/core/selftest.py), which itself sits above the bundle loader; so loading with
checks lives here rather than in worker/model/bundle.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from worker.core.selftest import SelfTestError, self_test, smoke_test
from worker.errors import ModelLoadError
from worker.model.bundle import ModelBundle, load_bundle
from worker.model.sample import version_differences

log = logging.getLogger(__name__)
NO_MISMATCH: Final = "none"


def load_checked(path: Path, *, allow_pickle: bool = False, threads: int = 1) -> ModelBundle:
    """``load_bundle`` plus the self-test (a smoke batch for bundles without a sample);
    raises ModelLoadError with one line. Library versions that differ from the bundle's
    are logged as a warning. ``threads``: the model's thread pools (``model_threads``)."""
    bundle = load_bundle(path, allow_pickle=allow_pickle, threads=threads)
    check_loaded(bundle)
    return bundle


def check_loaded(bundle: ModelBundle) -> float | None:
    """Run the self-test of an already loaded bundle; the largest difference found."""
    try:
        worst = self_test(bundle)
        if worst is None:
            smoke_test(bundle)
    except SelfTestError as exc:
        raise ModelLoadError(f"model bundle {bundle.path}: {exc}") from None
    mismatch = library_mismatch(bundle)
    if mismatch != NO_MISMATCH:
        log.warning("model %s %s was written with other library versions: %s",
                    bundle.name, bundle.version, mismatch,
                    extra={"model": bundle.name, "model_version": bundle.version})
    return worst


def library_mismatch(bundle: ModelBundle) -> str:
    """``scikit-learn 1.8.0!=1.9.1, ...`` for libraries whose version differs from the
    bundle's, "none" when all match (the ``library_mismatch`` label of scoring_model_info)."""
    differences = version_differences(bundle.manifest.libraries)
    return ", ".join(differences) if differences else NO_MISMATCH
