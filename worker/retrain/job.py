"""``scoring-worker retrain``: one bounded run, from the range's events to a decision.

Read the range (data.py), fit a fresh clone of the champion on the older rows
(candidate.py), choose the candidate's threshold on the holdout (threshold.py),
evaluate both models on the holdout with the worker's scoring and the monitor's
figures (evaluate.py), keep the candidate with its lineage in the registry ``--register``
names (registry.py: the store, or MLflow), apply the policy (policy.py) and act: promote
(the store's pointer or the MLflow alias, and the control topic), or shadow, or keep the
champion, and say so on the alerts topic (decision.py).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.core.pipeline import ScoringContext
from worker.core.schema import EventValidator
from worker.core.scoring import score_matrix
from worker.errors import ConfigError, RetrainError
from worker.model.bundle import ModelBundle, load_bundle
from worker.model.manifest import ReferenceHistogram
from worker.monitor.figures import Figure
from worker.retrain import act
from worker.retrain.candidate import fit, write_candidate
from worker.retrain.data import TrainingData, events_decoder, read_data
from worker.retrain.decision import Action, Compared, action_for
from worker.retrain.evaluate import TABLE_FIGURES, Evaluation, evaluate
from worker.retrain.policy import Decision, Policy, decide
from worker.retrain.registry import Candidate, Registry, open_registry
from worker.retrain.settings import RegisterIn, RetrainSettings, TimeRange, iso
from worker.retrain.table import comparison_table
from worker.retrain.threshold import ThresholdChoice, choose_threshold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainRequest:
    settings: RetrainSettings
    policy: Policy
    window: TimeRange
    promote_if_better: bool = False
    shadow: bool = False
    version: str | None = None  # the candidate's version; default: the next number


@dataclass(frozen=True)
class RetrainResult:
    compared: Compared
    decision: Decision
    action: Action
    counts: dict[str, Any]
    #: Where the candidate is: its store folder, or models:/NAME/VERSION in MLflow.
    candidate_at: str
    table: str
    #: The sequence of the control instruction issued (promoted, shadowed); None: none.
    sequence: int | None = None


def champion_of(s: RetrainSettings) -> tuple[Registry, ModelBundle]:
    """The registry ``--register`` names and the champion in it, with every check the
    workers make, the self-test included: a champion that would not serve is not one to
    compare with (and a .joblib one loads only with allow_pickle)."""
    mlflow = {"tracking_uri": s.mlflow_tracking_uri, "cache": s.mlflow_cache}
    registry = open_registry(s.register, s.model, s.allow_pickle, mlflow)
    champion = registry.champion()
    if champion.task != "binary":
        raise RetrainError(f"retrain compares binary classifiers; {champion.name} is "
                           f"{champion.task}")
    return registry, champion


def run_retrain(req: RetrainRequest, now_ms: int) -> RetrainResult:
    s = req.settings
    if req.shadow and req.promote_if_better:
        raise ConfigError("--shadow and --promote-if-better exclude each other (shadow first, "
                          "promote later with scoring-worker models promote)")
    if req.shadow and not s.control_topic:
        raise ConfigError("--shadow needs --control-topic: the workers learn of their shadow "
                          "model there")
    if req.version and s.register is RegisterIn.MLFLOW:
        raise ConfigError("--candidate-version does not apply to --register mlflow: MLflow "
                          "numbers its versions")
    registry, champion = champion_of(s)
    validator = EventValidator.from_file(Path(s.schema)) if s.schema else None
    ctx = ScoringContext(champion, validator, s.max_event_bytes, decoder=events_decoder(s))
    data = read_data(s, ctx, req.window, now_ms)
    run = _Run(req, ctx, data, req.version or registry.next_version(champion.name), now_ms)
    with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
        compared, decision, candidate = run.candidate(Path(tmp))
        version, where = registry.add(candidate, run.version)
    compared = dataclasses.replace(compared, candidate_version=version)
    action = action_for(decision, req.promote_if_better, req.shadow)
    sequence = act.apply(s, registry, compared, decision, req.policy, action, now_ms)
    return RetrainResult(compared, decision, action, data.counts(), where,
                         candidate.table(version), sequence)


@dataclass(frozen=True)
class _Run:
    req: RetrainRequest
    ctx: ScoringContext  # the champion's
    data: TrainingData
    version: str
    now_ms: int

    def candidate(self, tmp: Path) -> tuple[Compared, Decision, Candidate]:
        """Fit, stage, tune, compare; the candidate with its final bundle (not yet kept)."""
        champion, data, train = self.ctx.bundle, self.data, self.data.split.train
        model = fit(champion, data.model_input(train), np.asarray(data.truth(train)),
                    self.req.settings.seed)
        # Written and read back first: what is evaluated is what the store will hold.
        staged = load_bundle(self._write(tmp / "staged", model, champion.threshold,
                                         _placeholder(champion), {}, {}),
                             allow_pickle=self.req.settings.allow_pickle)
        train_scores = score_matrix(staged, data.model_input(train)).output[:, 1]
        reference = ReferenceHistogram.from_scores(train_scores, bins=_bins(champion))
        probe = self._evaluate(staged)
        choice = choose_threshold(_finite(probe.scores), self._positive(probe),
                                  self.req.policy.threshold, champion.threshold)
        cand = self._evaluate(_with(staged, choice.threshold, reference))
        champ = self._evaluate(champion)
        decision = decide(self.req.policy, champ.figures, cand.figures, choice.met)
        w = self.req.window
        compared = Compared(champion.name, champion.version, self.version, champ.figures,
                            cand.figures, (champion.threshold, choice.threshold),
                            (w.start_ms, w.end_ms), (data.split.cut_ms, w.end_ms))
        lineage = _lineage(self.req, data, champion, choice, compared, decision)
        final = self._write(tmp / "final", model, choice.threshold, reference, _numbers(cand),
                            lineage)
        table = partial(comparison_table, champion.version, champion=_table(compared.champion),
                        candidate=_table(compared.candidate), thresholds=compared.thresholds)
        return compared, decision, Candidate(
            final, model, data.model_input(data.split.holdout),
            {**_numbers(cand), "threshold": choice.threshold}, _numbers(champ), lineage, table)

    def _write(self, out: Path, model: Any, threshold: float, reference: ReferenceHistogram,
               metrics: dict[str, float], lineage: dict[str, Any]) -> Path:
        holdout = self.data.model_input(self.data.split.holdout)
        train = self.data.model_input(self.data.split.train)
        return write_candidate(out, model, self.ctx.bundle, version=self.version,
                               sample=holdout, threshold=threshold, metrics=metrics,
                               reference=reference, lineage=lineage,
                               created_at=iso(self.now_ms), profile_rows=train,
                               labels=self.data.truth(self.data.split.holdout))

    def _evaluate(self, bundle: ModelBundle) -> Evaluation:
        d, hold = self.data, self.data.split.holdout
        return evaluate(self.ctx, bundle, d.values(hold), d.truth(hold), d.times(hold),
                        self.now_ms)

    def _positive(self, probe: Evaluation) -> npt.NDArray[np.bool_]:
        positive = self.ctx.bundle.classes[1]
        truth = np.array([y == positive for y in self.data.truth(self.data.split.holdout)])
        return np.asarray(truth[np.isfinite(probe.scores)], dtype=bool)


def _table(figures: Mapping[str, Figure]) -> dict[str, Figure]:
    return {name: figures.get(name) for name in TABLE_FIGURES}


def _placeholder(champion: ModelBundle) -> ReferenceHistogram:
    return champion.manifest.reference_histogram or ReferenceHistogram.from_scores([0.5])


def _bins(champion: ModelBundle) -> int:
    ref = champion.manifest.reference_histogram
    return len(ref.counts) if ref is not None else 20


def _finite(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(scores[np.isfinite(scores)], dtype=np.float64)


def _with(bundle: ModelBundle, threshold: float, reference: ReferenceHistogram) -> ModelBundle:
    """``bundle`` as it will be written: its tuned threshold and its reference histogram."""
    manifest = dataclasses.replace(bundle.manifest, threshold=threshold,
                                   reference_histogram=reference)
    return dataclasses.replace(bundle, manifest=manifest)


def _numbers(e: Evaluation) -> dict[str, float]:
    return {k: float(v) for k, v in e.figures.items() if v is not None}


def _lineage(
    req: RetrainRequest, data: TrainingData, champion: ModelBundle, choice: ThresholdChoice,
    c: Compared, decision: Decision,
) -> dict[str, Any]:
    s, w = req.settings, req.window
    return {
        "created_by": "scoring-worker retrain",
        "data": {"input_topic": s.input_topic, "labels_topic": s.labels_topic,
                 "start_ms": w.start_ms, "end_ms": w.end_ms, "start": iso(w.start_ms),
                 "end": iso(w.end_ms), "labels_until_ms": data.labels_end_ms},
        "rows": data.counts(),
        "label_coverage": data.counts()["label_coverage"],
        "split": {"order": "Kafka record timestamp", "holdout_fraction": s.holdout_fraction,
                  "holdout_start_ms": data.split.cut_ms},
        "champion": {"version": champion.version, "sha256": champion.manifest.sha256,
                     "threshold": champion.threshold},
        "seed": s.seed,
        "threshold": {"target": req.policy.threshold.kind,
                      "target_value": req.policy.threshold.value, **choice.to_dict()},
        "figures": {"champion": dict(c.champion), "candidate": dict(c.candidate)},
        "policy": req.policy.to_dict(),
        "policy_passed": decision.promote,
    }
