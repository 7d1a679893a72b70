"""A forest's prediction without scikit-learn's per-tree overhead, to the same bits.

scikit-learn's ``RandomForestClassifier.predict_proba`` (and the regressor's ``predict``,
and the ExtraTrees twins) runs each tree through joblib and the tree's public
``predict_proba``, which validates the input again for every tree. For the worker's
small batches that validation is most of the cost: 200 trees cost about 30 ms for one
row on the loaded 2-core development machine, against under 3 ms for the trees' own
traversal (``Tree.predict``). ``ForestFast`` validates the batch once, with the forest's
own check (so bad input fails with scikit-learn's message, as before), then adds the
trees' outputs in the forest's order and divides as scikit-learn does: the result is
bit-identical to ``predict_proba``/``predict`` (tests/unit/model/test_forest_fast.py).

Only with one thread: with more, scikit-learn's own path spreads the trees over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from worker.model.runtimes import FloatArray, class_path

#: The exact classes whose prediction is the plain mean of their trees' outputs
#: (subclasses may change that, so they keep scikit-learn's path).
FORESTS: Final = frozenset({
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.ensemble._forest.ExtraTreesRegressor",
})


@dataclass(frozen=True, slots=True)
class ForestFast:
    """The mean of a single-output forest's trees: class probabilities or a regression."""

    forest: Any
    trees: tuple[Any, ...]  # each fitted tree's ``tree_`` (scikit-learn's Cython Tree)
    classes: int  # 0: a regressor

    def __call__(self, matrix: Any) -> FloatArray:
        x = self.forest._validate_X_predict(matrix)  # float32, checked as scikit-learn does
        width = self.classes or 1
        total = np.zeros((x.shape[0], width), dtype=np.float64)
        for tree in self.trees:
            total += tree.predict(x)[:, :width]
        total /= len(self.trees)
        return total if self.classes else total[:, 0]


def forest_fast(estimator: Any, threads: int) -> ForestFast | None:
    """The fast path for ``estimator``, or None where scikit-learn's own path must run:
    another kind of model, several outputs, more than one thread, or a scikit-learn whose
    forests lack what this path relies on."""
    kind = class_path(estimator)
    if threads != 1 or kind not in FORESTS or getattr(estimator, "n_outputs_", 0) != 1:
        return None
    if not callable(getattr(estimator, "_validate_X_predict", None)):
        return None
    trees = tuple(getattr(e, "tree_", None) for e in getattr(estimator, "estimators_", ()))
    if not trees or any(t is None or not callable(getattr(t, "predict", None))
                        for t in trees):
        return None
    classes = int(estimator.n_classes_) if hasattr(estimator, "classes_") else 0
    return ForestFast(estimator, trees, classes)
