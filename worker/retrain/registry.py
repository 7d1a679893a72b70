"""Where a retrain run's champion comes from and its candidate goes (``--register``): the
model store (the default: ``--model STORE/<name>``) or an MLflow registry (``--register
mlflow``, ``--model models:/NAME@ALIAS``; worker/retrain/mlflow_registry.py, imported only
then, so a run without MLflow imports nothing of it).

A registry gives the champion with every check the workers make, numbers the candidate,
keeps it, and, when the policy says so, makes it what the workers serve: the store moves
its pointer, MLflow moves the alias; either then publishes the control record, so every
worker of a fleet swaps at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from worker import model_control
from worker.errors import ConfigError, RetrainError
from worker.mlflow_ref import is_mlflow_model
from worker.model.bundle import ModelBundle
from worker.model.checked import load_checked
from worker.model.store import ModelStore, is_model_folder
from worker.model_control import ControlTopic
from worker.retrain.candidate import next_version
from worker.retrain.decision import Compared
from worker.retrain.settings import RegisterIn


@dataclass(frozen=True)
class Candidate:
    """A fitted candidate as the run leaves it: its bundle (in a temporary folder), the
    estimator, the holdout rows as the model takes them, its holdout figures, lineage,
    and the comparison table for a given candidate version."""

    bundle: Path
    estimator: Any
    sample: Any
    metrics: Mapping[str, float]
    champion_metrics: Mapping[str, float]
    lineage: Mapping[str, Any]
    table: Callable[[str], str]


class Registry(Protocol):
    def champion(self) -> ModelBundle:
        """The version serving now, loaded with every check (self-test included)."""
        ...

    def next_version(self, name: str) -> str: ...

    def add(self, candidate: Candidate, version: str) -> tuple[str, str]:
        """Keep the candidate; (the version it got, where it is)."""
        ...

    def promote(self, c: Compared, target: ControlTopic | None) -> int | None:
        """Make the candidate what serves, unless the champion changed meanwhile
        (RetrainError); the control record's sequence (None: no control topic)."""
        ...

    def shadow(self, c: Compared, target: ControlTopic) -> int: ...


@dataclass
class StoreRegistry:
    """The model store of ``--model STORE/<name>``."""

    folder: Path
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if not is_model_folder(self.folder):
            raise ConfigError(f"--model {self.folder} is not a model store folder "
                              "STORE/<name> with a current version (see scoring-worker "
                              "models promote)")
        self.store = ModelStore(self.folder.parent, self.allow_pickle)

    def champion(self) -> ModelBundle:
        # A .joblib champion loads only with allow_pickle, as in the workers.
        return load_checked(self.store.current(self.folder.name), allow_pickle=self.allow_pickle)

    def next_version(self, name: str) -> str:
        return next_version(v.version for v in self.store.list() if v.name == name)

    def add(self, candidate: Candidate, version: str) -> tuple[str, str]:
        self.store.add(candidate.bundle)
        return version, str(self.store.version_path(self.folder.name, version))

    def promote(self, c: Compared, target: ControlTopic | None) -> int | None:
        serving = self.store.pointer(c.model).version
        if serving != c.champion_version:  # someone promoted meanwhile: theirs stands
            raise RetrainError(f"{c.model} {serving} was made current during the run; "
                               f"candidate {c.candidate_version} was compared with "
                               f"{c.champion_version} and is not promoted (run again)")
        # What `models promote --control-topic` does: the pointer under the next sequence,
        # then the control record with that sequence, so every worker swaps.
        return model_control.promote(self.store, c.model, c.candidate_version,
                                     target).sequence

    def shadow(self, c: Compared, target: ControlTopic) -> int:
        return model_control.shadow(self.store, c.model, c.candidate_version, target)


def open_registry(register: RegisterIn, model: str, allow_pickle: bool,
                  mlflow: Mapping[str, str]) -> Registry:
    """The registry ``--register`` names, for ``--model``; ConfigError when they do not
    fit together. ``mlflow``: the tracking_uri and cache settings."""
    if register is RegisterIn.STORE:
        if is_mlflow_model(model):
            raise ConfigError(f"--model {model} is an MLflow model: give --register mlflow "
                              "(the candidate goes back to MLflow)")
        return StoreRegistry(Path(model), allow_pickle)
    if not is_mlflow_model(model) or "@" not in model:
        raise ConfigError(f"--register mlflow needs --model models:/NAME@ALIAS (the alias "
                          f"the workers follow), got {model!r}")
    from worker.retrain.mlflow_registry import MlflowRegistry

    return MlflowRegistry(model, mlflow["tracking_uri"], Path(mlflow["cache"]), allow_pickle)
