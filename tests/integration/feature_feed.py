"""Feature statistics fed to a monitor the way exactly-once workers publish them (one record
per transaction, some transactions aborted), and the check of the monitor's feature windows
against a recount of the events with numpy and a reference PSI and JS (scipy)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import Producer
from scipy.spatial.distance import jensenshannon
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from worker.core.columns import build_columns
from worker.core.feature_counts import CountLayout
from worker.core.feature_stats import FeatureStats
from worker.model import write_bundle
from worker.model.bundle import load_bundle
from worker.model.profile import FeatureProfile, Profile

MODEL = "fs-test"
INTERVAL_MS = 10_000
COUNTRIES = ["de", "fr", "it", "es"]


def profiled_bundle(folder: Path) -> Path:
    """A pipeline over a number (sometimes missing), an integer and a category."""
    rng = np.random.default_rng(11)
    n = 3000
    frame = pd.DataFrame({"amount": rng.lognormal(3.0, 1.0, n),
                          "items": rng.integers(1, 10, n),
                          "country": rng.choice(COUNTRIES, n)})
    frame.loc[::20, "amount"] = np.nan
    model = make_pipeline(ColumnTransformer([
        ("num", SimpleImputer(), ["amount", "items"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["country"])]), LogisticRegression())
    model.fit(frame, (rng.random(n) < 0.3).astype(int))
    return write_bundle(folder, model, name=MODEL, version="1", task="binary",
                        sample=frame, reference=frame)


def events(rng: np.random.Generator, n: int, drifted: bool) -> list[dict[str, Any]]:
    """Nulls, values out of the reference range, an unseen category; amount x10 if drifted."""
    out = []
    for _ in range(n):
        u = rng.random(4)
        out.append({
            "amount": None if u[0] < 0.05 else float(rng.lognormal(3.0, 1.0))
            * (10 if drifted else 1),
            "items": int(rng.choice([0, 50])) if u[1] < 0.02 else int(rng.integers(1, 10)),
            "country": None if u[2] < 0.02 else ("zz" if u[3] < 0.05
                                                 else str(rng.choice(COUNTRIES)))})
    return out


@dataclass
class StatsFeed:
    """Records over the last 20 minutes of 10 s intervals; every 7th one aborted."""

    bundle: Path
    starts: list[int] = field(default_factory=list)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    aborted: set[int] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def make(cls, bundle: Path, now_ms: int, records: int = 120, per: int = 50) -> StatsFeed:
        rng = np.random.default_rng(12)
        feed = cls(bundle)
        first = now_ms - now_ms % INTERVAL_MS - (records - 1) * INTERVAL_MS
        for k in range(records):
            feed.starts.append(first + k * INTERVAL_MS)
            feed.batches.append(events(rng, per, drifted=k >= records // 2))
        feed.aborted = set(range(6, records, 7))
        return feed

    def committed(self, start: int, end: int) -> list[dict[str, Any]]:
        return [e for k, (at, batch) in enumerate(zip(self.starts, self.batches, strict=True))
                if k not in self.aborted and start <= at < end for e in batch]

    def send(self, bootstrap: str, topic: str, seconds: float) -> threading.Thread:
        """Publish in the background over about ``seconds``, one transaction a record."""
        manifest = load_bundle(self.bundle).manifest
        assert manifest.profile is not None
        layout, digest = CountLayout.of(manifest.profile), manifest.profile.digest()

        def run() -> None:
            p = Producer({"bootstrap.servers": bootstrap,
                          "transactional.id": f"fs-feed-{uuid.uuid4().hex}"})
            p.init_transactions(30)
            for k, (at, batch) in enumerate(zip(self.starts, self.batches, strict=True)):
                counts = layout.count(build_columns(batch, manifest.feature_specs)[0])
                record = FeatureStats(MODEL, "1", "w-feed", at, INTERVAL_MS, digest,
                                      len(batch), tuple(counts.tolist()))
                p.begin_transaction()
                p.produce(topic, record.encode(), record.key)
                if k in self.aborted:
                    p.abort_transaction(30)
                else:
                    p.commit_transaction(30)
                time.sleep(seconds / len(self.batches))
            self.done.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def recount(p: FeatureProfile, rows: list[dict[str, Any]]) -> list[int]:
    """One feature's slots with numpy: bins by digitize, then missing and the range, or the
    top values by unique, then other and missing."""
    values = [r.get(p.name) for r in rows]
    if p.kind == "numeric":
        x = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        present = x[~np.isnan(x)]
        bins = np.bincount(np.digitize(present, np.array(p.edges)), minlength=len(p.edges) + 1)
        assert p.min is not None and p.max is not None
        return [*bins.tolist(), int(np.isnan(x).sum()), int((present < p.min).sum()),
                int((present > p.max).sum())]
    present = np.array([v for v in values if v is not None], dtype=str)
    names, counts = np.unique(present, return_counts=True)
    found = dict(zip(names.tolist(), counts.tolist(), strict=True))
    tops = [found.get(str(t), 0) for t in p.top]
    return [*tops, len(present) - sum(tops), len(values) - len(present)]


def reference_psi_js(actual: list[int], expected: tuple[int, ...]) -> tuple[float, float]:
    a = np.array(actual, dtype=np.float64) / sum(actual)
    e = np.array(expected, dtype=np.float64) / sum(expected)
    a, e = np.where(a > 0, a, 1e-4), np.where(e > 0, e, 1e-4)
    psi = float(np.sum((a - e) * np.log(a / e)))
    return psi, float(jensenshannon(np.array(actual, float), np.array(expected, float), base=2))


def check_windows(doc: dict[str, Any], feed: StatsFeed, profile: Profile) -> int:
    """Every feature window of the model equals the recount of its committed events;
    returns how many windows were checked."""
    windows = [w for w in doc["windows"] if w["model"] == MODEL]
    assert {w["window"] for w in windows} == {"rolling", "5m", "1h"}, windows
    by_name = {p.name: p for p in profile.features}
    for w in windows:
        rows = feed.committed(w["window_start"], w["window_end"])
        assert w["rows"] == len(rows), (w["window"], w["rows"], len(rows))
        for f in w["features"]:
            p = by_name[f["feature"]]
            want = recount(p, rows)
            assert f["counts"] == want, (w["window"], p.name, f["counts"], want)
            count = len(rows)
            assert f["count"] == count
            if count == 0:  # a window that has only begun
                continue
            assert f["missing_rate"] == want[len(p.bin_counts())] / count
            if p.kind == "numeric":
                assert f["out_of_range_rate"] == (want[-2] + want[-1]) / count
            else:
                assert f["unseen_rate"] == want[-2] / count
            psi, js = reference_psi_js(want[: len(p.bin_counts())], p.bin_counts())
            assert abs(f["psi"] - psi) <= 1e-9 and abs(f["js"] - js) <= 1e-9, (p.name, f)
    return len(windows)
