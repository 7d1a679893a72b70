"""The monitor's side of a chaos run's account (issue 26): every window the monitor wrote,
recomputed with scikit-learn from all the run's predictions and labels, and the monitor's
join counters against the same records.

    .venv/bin/python bench/chaos_windows.py --bootstrap 127.0.0.1:PORT --run chaos-1a2b3c

Run it on the run's broker after the monitor caught up (``bench/chaos.py --keep`` keeps
the broker's folder; restart it and the monitor under the run's group and instance id).
Figures as in tests/integration/test_monitor.py: counts exact, ratios and losses within
1e-9, ROC AUC within 1e-3. Prints one JSON object: windows compared, mismatches (the
first ten), and the counters' checks.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition
from sklearn import metrics as skm

SIZES = {"5m": 300_000, "1h": 3_600_000}
RATIOS = ("accuracy", "precision", "recall", "f1", "log_loss", "brier")
COUNTS = ("count", "predicted", "expired", "positives")


def read_all(bootstrap: str, topic: str) -> Iterator[tuple[bytes, bytes]]:
    """Every committed (key, value) of ``topic`` from its beginning to its current end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"windows-{topic}",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "auto.offset.reset": "earliest",
                  "enable.partition.eof": True, "logger": logging.getLogger("windows")})
    parts = c.list_topics(topic, timeout=30).topics[topic].partitions
    ends = {}
    for p in parts:
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if high > low:
            ends[p] = high
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    done: set[int] = set()
    while len(done) < len(ends):
        for m in c.consume(10_000, 5.0):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    done.add(m.partition() or 0)
                continue
            yield m.key() or b"", m.value() or b""
    c.close()


def expected(preds: dict[str, dict[str, Any]], labels: dict[str, int]) -> dict[str, Any]:
    """scikit-learn's figures per window key (model|version|window|start)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in preds.values():
        t = p.get("event_ts") or p["scored_at"]
        for name, size in SIZES.items():
            key = f"{p['model']}|{p['model_version']}|{name}|{t - t % size}"
            groups.setdefault(key, []).append(p)
    out = {}
    for key, group in groups.items():
        labeled = [p for p in group if p["id"] in labels]
        y = np.array([labels[p["id"]] for p in labeled])
        s = np.array([p["score"] for p in labeled])
        d = np.array([p["label"] for p in labeled])
        both = len(set(y.tolist())) == 2
        out[key] = {"count": len(labeled), "predicted": len(group),
                    "expired": len(group) - len(labeled), "positives": int(y.sum()),
                    "accuracy": skm.accuracy_score(y, d),
                    "precision": skm.precision_score(y, d, zero_division=0),
                    "recall": skm.recall_score(y, d, zero_division=0),
                    "f1": skm.f1_score(y, d, zero_division=0),
                    "log_loss": skm.log_loss(y, s, labels=[0, 1]),
                    "brier": skm.brier_score_loss(y, s),
                    "roc_auc": skm.roc_auc_score(y, s) if both else None}
    return out


def compare(got: dict[str, dict[str, Any]], want: dict[str, Any]) -> list[str]:
    bad = [f"{k}: written by the monitor, not in the records" for k in set(got) - set(want)]
    bad += [f"{k}: in the records, never written" for k in set(want) - set(got)]
    for key in sorted(set(got) & set(want)):
        g, w = got[key], want[key]
        bad += [f"{key} {n}: {g.get(n)} != {w[n]}" for n in COUNTS if g.get(n) != w[n]]
        bad += [f"{key} {n}: {g.get(n)} != {w[n]}" for n in RATIOS
                if g.get(n) is None or abs(g[n] - w[n]) > 1e-9]
        if w["roc_auc"] is not None and (g.get("roc_auc") is None
                                         or abs(g["roc_auc"] - w["roc_auc"]) > 1e-3):
            bad.append(f"{key} roc_auc: {g.get('roc_auc')} != {w['roc_auc']}")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--run", required=True, help="the run's name (its topics' prefix)")
    args = ap.parse_args()
    b, run = args.bootstrap, args.run
    preds: dict[str, dict[str, Any]] = {}
    repeats = 0
    for _, v in read_all(b, f"{run}-out"):
        p = orjson.loads(v)
        if p["id"] in preds:
            repeats += 1
        else:
            preds[p["id"]] = p
    labels = {(lab := orjson.loads(v))["id"]: int(lab["label"])
              for _, v in read_all(b, f"{run}-labels")}
    got: dict[str, dict[str, Any]] = {}
    for k, v in read_all(b, f"{run}-metrics"):
        if v and not k.endswith(b"|rolling"):
            got[k.decode()] = orjson.loads(v)
    stats: dict[str, Any] = {}
    for _, v in read_all(b, f"{run}-stats"):
        stats = orjson.loads(v)
    bad = compare(got, expected(preds, labels))
    joined = sum(1 for i in preds if i in labels)
    counters = {"predictions": (stats.get("predictions"), len(preds)),
                "joined": (stats.get("joined"), joined),
                "unmatched_labels": (stats.get("unmatched_labels"),
                                     sum(1 for i in labels if i not in preds)),
                "expired_predictions": (stats.get("expired_predictions"), 0)}
    print(orjson.dumps({
        "predictions": len(preds), "repeated_predictions": repeats, "labels": len(labels),
        "windows_written": len(got), "windows_mismatched": len(bad), "mismatches": bad[:10],
        "stats": stats, "counters_monitor_vs_records": counters,
        "counters_add_up": all(a == e for a, e in counters.values()),
    }).decode())


if __name__ == "__main__":
    main()
