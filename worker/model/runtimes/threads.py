"""The thread pools a loaded model may use (the worker's ``model_threads``).

A worker scores a stream of small batches (usually tens to hundreds of rows) on one
loop thread, beside librdkafka's own threads and often the broker. The libraries a
model runs on start thread pools sized to the machine: OpenMP (HistGradientBoosting,
LightGBM, XGBoost), BLAS (linear models), onnxruntime's intra-op pool. On a batch of a
few hundred rows the threads cost more to wake than they save, and they take the
cores the consumer and producer need, so a busy pool shows up as tail latency.

Three kinds of limit, each applied where its library allows:
- OpenMP and BLAS through threadpoolctl. BLAS limits are process-wide; an OpenMP
  limit belongs to the thread that sets it (libgomp keeps it per thread), so the
  limit is applied in the loading thread and again, once, in each thread that scores
  (``ThreadLimit.ensure``): reloads load in one thread and score in another;
- ``n_jobs``/``nthread`` of estimators whose prediction runs a pool of their own
  (scikit-learn's forests, LightGBM and XGBoost's scikit-learn API), set with
  ``set_params``. Not ColumnTransformer's or FeatureUnion's ``n_jobs``: those start
  processes per call;
- onnxruntime's ``intra_op_num_threads`` (worker/model/runtimes/onnx.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Final

#: Estimator parameters that size a prediction's own thread pool.
THREAD_PARAMS: Final = ("n_jobs", "nthread")
#: Modules of estimators whose ``n_jobs``/``nthread`` are threads at prediction time:
#: scikit-learn's forests (joblib with threads), LightGBM and XGBoost (OpenMP).
THREADED_MODULES: Final = ("sklearn.ensemble._forest", "lightgbm", "xgboost")


@dataclass(frozen=True, slots=True)
class ThreadLimit:
    """``threads`` for the OpenMP and BLAS pools of each thread that scores."""

    threads: int
    _applied: threading.local = field(default_factory=threading.local, repr=False,
                                      compare=False)

    def ensure(self) -> None:
        """Apply the limit in the calling thread, once (later calls cost an attribute read)."""
        if not getattr(self._applied, "done", False):
            limit_native_pools(self.threads)
            self._applied.done = True


def limit_native_pools(threads: int) -> None:
    """OpenMP (for the calling thread) and BLAS (for the process) at ``threads``; only
    libraries already loaded are seen, so call it after the model's libraries loaded."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def limit_estimator(estimator: Any, threads: int) -> ThreadLimit:
    """Set the ``n_jobs``/``nthread`` of ``estimator`` and of the estimators inside it
    (a Pipeline's steps) to ``threads``; then the OpenMP and BLAS pools of the calling
    thread. The returned limit applies the same to each other thread that scores."""
    for owner, name in _thread_params(estimator):
        owner.set_params(**{name: threads})
    limit = ThreadLimit(threads)
    limit.ensure()
    return limit


def _thread_params(estimator: Any) -> list[tuple[Any, str]]:
    """(estimator, parameter) for each threaded estimator inside ``estimator``."""
    found: list[tuple[Any, str]] = []
    get_params = getattr(estimator, "get_params", None)
    if get_params is None:
        return found
    params = get_params(deep=False)
    if type(estimator).__module__.startswith(THREADED_MODULES):
        found += [(estimator, name) for name in THREAD_PARAMS if name in params]
    for value in _inner(estimator, params):
        found += _thread_params(value)
    return found


def _inner(estimator: Any, params: dict[str, Any]) -> list[Any]:
    """The estimators held by ``estimator``: its parameters, a Pipeline's steps, and
    the fitted ones a meta-estimator predicts with (stacking, voting, bagging)."""
    inner = [v for v in params.values() if hasattr(v, "get_params")]
    for key in ("steps", "transformers_"):
        inner += [item[1] for item in params.get(key) or getattr(estimator, key, None) or ()
                  if isinstance(item, tuple | list) and len(item) > 1
                  and hasattr(item[1], "get_params")]
    for key in ("estimator_", "final_estimator_"):
        if hasattr(getattr(estimator, key, None), "get_params"):
            inner.append(getattr(estimator, key))
    fitted = getattr(estimator, "estimators_", None)
    if isinstance(fitted, list):
        inner += [e for e in fitted if hasattr(e, "get_params")]
    return inner
