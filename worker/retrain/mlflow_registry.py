"""``retrain --register mlflow``: the champion is the version ``models:/NAME@ALIAS`` points
to (made a checked bundle like a worker makes it, worker/model/mlflow_source.py); the
candidate goes back to MLflow as a new version of NAME.

One MLflow run per candidate holds it: the sklearn flavour (skops unless allow_pickle, with
the signature and holdout rows as its input example, which the workers self-test it with),
its holdout figures as metrics (``holdout_<figure>``, and the champion's as
``champion_holdout_<figure>``), its lineage as run and model-version tags
(``scoring_worker.<path>``) and as ``lineage.json``, and the comparison table as
``comparison.txt``. The new version gets the alias ``challenger``; a promotion moves
``ALIAS`` to it, and with a control topic announces it to the fleet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import pandas as pd

from worker import model_control
from worker.errors import ConfigError, RetrainError
from worker.mlflow_ref import ModelRef, parse_ref
from worker.model.bundle import ModelBundle
from worker.model.mlflow_source import MlflowSource, import_mlflow, load_start
from worker.model_control import ControlTopic
from worker.retrain.decision import Compared
from worker.retrain.registry import Candidate

CHALLENGER: Final = "challenger"
TAG_PREFIX: Final = "scoring_worker."
#: Rows of the holdout logged as the input example (the workers' self-test sample).
EXAMPLE_ROWS: Final = 64
_TAG_MAX: Final = 5000  # MLflow's limit on a tag value


@dataclass
class MlflowRegistry:
    model: str  # models:/NAME@ALIAS
    tracking_uri: str
    cache: Path
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        self.ref = parse_ref(self.model)
        self.source = MlflowSource(self.tracking_uri, self.cache, self.allow_pickle)
        self.mlflow = import_mlflow()
        uri = self.tracking_uri or None
        self.client = self.mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    def champion(self) -> ModelBundle:
        return load_start(self.source, self.model)

    def next_version(self, name: str) -> str:
        """What MLflow will most likely number the candidate (the table's provisional
        header; ``add`` says what it really got)."""
        versions = self._call("listing versions", self.client.search_model_versions,
                              f"name='{name}'")
        return str(max((int(v.version) for v in versions), default=0) + 1)

    def add(self, candidate: Candidate, version: str) -> tuple[str, str]:
        del version  # MLflow numbers versions itself
        added = self._call("registering the candidate", self._add, candidate, self.ref.name)
        return added, ModelRef(self.ref.name).version_uri(added)

    def _add(self, cand: Candidate, name: str) -> str:
        mlflow, tags = self.mlflow, lineage_tags(cand.lineage)
        sample = cand.sample if isinstance(cand.sample, pd.DataFrame) else None
        if sample is None:
            raise RetrainError("--register mlflow needs a model that takes named columns "
                               "(a DataFrame), as models served from MLflow do")
        from mlflow.models import infer_signature

        with mlflow.start_run(run_name=f"retrain {name}") as run:
            mlflow.log_metrics({f"holdout_{k}": v for k, v in cand.metrics.items()})
            mlflow.log_metrics({f"champion_holdout_{k}": v
                                for k, v in cand.champion_metrics.items()})
            mlflow.set_tags(tags)
            mlflow.log_dict(dict(cand.lineage), "lineage.json")
            info = mlflow.sklearn.log_model(
                cand.estimator, name="model", input_example=sample.iloc[:EXAMPLE_ROWS],
                signature=infer_signature(sample, cand.estimator.predict_proba(sample)),
                **_serialization(cand.estimator, self.allow_pickle))
            added = str(mlflow.register_model(info.model_uri, name, tags=tags).version)
            self.client.log_text(run.info.run_id, cand.table(added), "comparison.txt")
        self.client.set_registered_model_alias(name, CHALLENGER, added)
        return added

    def promote(self, c: Compared, target: ControlTopic | None) -> int | None:
        alias = self.ref.alias or ""
        serving = self._call("resolving the alias", self.source.resolve, self.ref)
        if serving != c.champion_version:  # someone moved the alias meanwhile: theirs stands
            raise RetrainError(f"{self.ref.uri} moved to {serving} during the run; candidate "
                               f"{c.candidate_version} was compared with {c.champion_version} "
                               "and is not promoted (run again)")
        self._call("moving the alias", self.client.set_registered_model_alias, c.model, alias,
                   c.candidate_version)
        if target is None:
            return None
        return model_control.announce(c.model, c.candidate_version, target)

    def shadow(self, c: Compared, target: ControlTopic) -> int:
        raise ConfigError("--shadow works with the model store, not yet with --register mlflow")

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (RetrainError, ConfigError):
            raise
        except Exception as exc:
            text = " ".join(str(exc).split())[:500]
            raise RetrainError(f"MLflow at {self.source.tracking_uri or 'its default URI'}: "
                               f"{what} failed: {text}") from None


def lineage_tags(lineage: Mapping[str, Any]) -> dict[str, str]:
    """``{"data": {"input_topic": "tx"}}`` -> ``{"scoring_worker.data.input_topic": "tx"}``;
    lists and numbers as JSON, each value cut at MLflow's limit."""
    out: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}")
            return
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        out[key] = text[:_TAG_MAX]

    for k, v in lineage.items():
        walk(v, f"{TAG_PREFIX}{k}")
    return out


def _serialization(estimator: Any, allow_pickle: bool) -> dict[str, Any]:
    """skops, trusting the types of the estimator the run itself fitted; cloudpickle only
    with allow_pickle (as the workers would refuse it otherwise)."""
    if allow_pickle:
        return {"serialization_format": "cloudpickle"}
    import skops.io as sio

    trusted = sio.get_untrusted_types(data=sio.dumps(estimator))
    return {"serialization_format": "skops", "skops_trusted_types": trusted}
