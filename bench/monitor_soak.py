"""Monitor memory soaks: live traffic through a worker, and a 24 h horizon in accelerated time.

    flock /tmp/bench.lock python bench/monitor_soak.py live --seconds 600 --rate 5000
    flock /tmp/bench.lock python bench/monitor_soak.py accelerated --events 3000000

``live``: demo transactions at ``--rate`` events/s through one worker, their labels
``--label-delay`` seconds late, into one monitor (default settings: 24 h horizon, 1 h
dedup window, state on disk). Samples both processes' RSS every 10 s and reports the
monitor's growth after the first minute. The demo model carries a calibration map, so the
monitor computes its estimated figures; ``--feature-stats`` also has the worker publish
feature statistics and the monitor keep per-feature drift windows. ``--baseline-monitor``
runs a second monitor beside it on the same traffic (its own group and state), given the
same bundle without its calibration map: the same run without the estimates, whose RSS is
reported the same way (``baseline_*``).

``accelerated``: no worker; predictions at 1,000 events per second of *event time* with
Kafka timestamps set to that time (it starts 30 h ago, so that it never runs ahead of
the broker's clock), produced as fast as the monitor takes them; each label comes an
exponential delay (mean ``--mean-delay-h`` hours) after its prediction, in the same
accelerated time, so most are still pending at the end. Reports RSS over time, the
pending predictions and the disk bytes per pending prediction.
"""

from __future__ import annotations

import argparse
import heapq
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer
from procstat import NOW, PEAK, rss_mib  # bench/procstat.py: this folder is on sys.path

from worker import kafka_io
from worker.devtools.demo import train_demo
from worker.devtools.demo_run import free_port, wait_ready
from worker.model import MANIFEST_NAME

ROOT = Path(__file__).resolve().parents[1]


def scrape(port: int) -> dict[str, float]:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for name in ("scoring_monitor_joined_total", "scoring_monitor_predictions_total",
                 "scoring_monitor_state_disk_bytes", "scoring_monitor_newest_join_age_seconds",
                 "scoring_monitor_state_memory_bytes"):
        m = re.search(rb"^" + name.encode() + rb" (\S+)$", body, re.M)
        if m:
            out[name] = float(m.group(1))
    lags = re.findall(rb"^scoring_monitor_consumer_lag_messages\{[^}]*\} (\S+)$", body, re.M)
    out["lag"] = sum(float(v) for v in lags)
    return out


def start_monitor(b: str, t: dict[str, str], state: Path, port: int,
                  extra: list[str], traced: str = "") -> subprocess.Popen[bytes]:
    # --traced FILE: the monitor under tracemalloc (bench/traced.py), what grew into FILE
    run = ([sys.executable, str(Path(__file__).with_name("traced.py")), traced] if traced
           else [sys.executable, "-m", "worker"])
    return subprocess.Popen(
        [*run, "monitor", "--bootstrap", b,
         "--predictions-topic", t["pred"], "--labels-topic", t["labels"],
         "--metrics-topic", t["metrics"], "--alerts-topic", t["alerts"],
         "--stats-topic", t["stats"], "--group", f"{t['run']}-monitor", "--instance-id",
         "soak", "--metrics-port", str(port), "--state-dir", str(state),
         "--log-level", "WARNING", *extra])


def live(args: argparse.Namespace, t: dict[str, str], tmp: Path) -> dict[str, Any]:
    b = args.bootstrap
    model = train_demo(tmp / "model", n=20_000)
    wport, mport = free_port(), free_port()
    stats = ["--feature-stats-topic", t["fstats"]] if args.feature_stats else []
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--bootstrap", b, "--input-topic", t["in"],
         "--output-topic", t["pred"], "--dlq-topic", t["dlq"], "--group", f"{t['run']}-w",
         "--model", str(model), "--metrics-port", str(wport),
         "--log-level", "WARNING", *stats])
    wait_ready(wport, worker, 60)
    mon = start_monitor(b, t, tmp / "state", mport, ["--models", str(model), *stats],
                        args.traced)
    base, bport = None, free_port()
    if args.baseline_monitor:
        plain = without_calibration(model, tmp / "model-plain")
        base = start_monitor(b, {**t, "run": f"{t['run']}-base"}, tmp / "state-base", bport,
                             ["--models", str(plain), *stats])
    count = int(args.rate * args.seconds)
    feed = subprocess.Popen(
        [sys.executable, "-m", "worker", "produce-demo", "--bootstrap", b, "--topic", t["in"],
         "--count", str(count), "--rate", str(args.rate), "--labels-topic", t["labels"],
         "--label-delay", str(args.label_delay)], stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    samples = []
    while feed.poll() is None and time.monotonic() - t0 < args.seconds + 120:
        time.sleep(10)
        m = scrape(mport)
        samples.append({
            "s": round(time.monotonic() - t0), "monitor_rss_mib": round(rss_mib(mon.pid, NOW)),
            "worker_rss_mib": round(rss_mib(worker.pid, NOW)),
            "joined": int(m.get("scoring_monitor_joined_total", 0)),
            "lag": int(m.get("lag", 0)),
            "join_age_s": round(m.get("scoring_monitor_newest_join_age_seconds", -1), 1),
            "rocksdb_mib": round(m.get("scoring_monitor_state_memory_bytes", 0) / 2**20)})
        if base is not None:
            samples[-1]["baseline_rss_mib"] = round(rss_mib(base.pid, NOW))
            samples[-1]["baseline_joined"] = int(
                scrape(bport).get("scoring_monitor_joined_total", 0))
        print(orjson.dumps(samples[-1]).decode(), file=sys.stderr, flush=True)
    after_1m = [s["monitor_rss_mib"] for s in samples if s["s"] >= 60]
    result = {"mode": "live", "rate": args.rate, "seconds": args.seconds,
              "label_delay_s": args.label_delay, "samples": samples,
              "monitor_rss_at_1m_mib": after_1m[0] if after_1m else None,
              "monitor_rss_end_mib": samples[-1]["monitor_rss_mib"] if samples else None,
              "monitor_rss_growth_after_1m_mib":
                  (max(after_1m) - after_1m[0]) if after_1m else None,
              "monitor_peak_rss_mib": round(rss_mib(mon.pid, PEAK)),
              "worker_peak_rss_mib": round(rss_mib(worker.pid, PEAK))}
    if base is not None:
        result.update(rss_summary("baseline", [s["baseline_rss_mib"] for s in samples
                                               if s["s"] >= 60]))
        result["baseline_peak_rss_mib"] = round(rss_mib(base.pid, PEAK))
    result.update(rss_summary("monitor", after_1m))
    for p in (feed, mon, *([base] if base is not None else []), worker):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        p.wait(120)
    return result


def without_calibration(bundle: Path, folder: Path) -> Path:
    """A copy of ``bundle`` whose manifest has no calibration map: estimates off."""
    shutil.copytree(bundle, folder)
    manifest = folder / MANIFEST_NAME
    data = orjson.loads(manifest.read_bytes())
    data.pop("calibration", None)
    manifest.write_bytes(orjson.dumps(data))
    return folder


def rss_summary(name: str, after_1m: list[int]) -> dict[str, Any]:
    """RSS from the first minute on: at 1 min, the largest sample, the end, and the medians
    of the first three and of the last three samples (10 s apart)."""
    if not after_1m:
        return {}
    return {f"{name}_rss_1m_mib": after_1m[0], f"{name}_rss_max_mib": max(after_1m),
            f"{name}_rss_end_mib": after_1m[-1],
            f"{name}_rss_growth_mib": max(after_1m) - after_1m[0],
            f"{name}_rss_median_first3_mib": float(np.median(after_1m[:3])),
            f"{name}_rss_median_last3_mib": float(np.median(after_1m[-3:]))}


def accelerated(args: argparse.Namespace, t: dict[str, str], tmp: Path) -> dict[str, Any]:
    b = args.bootstrap
    port = free_port()
    mon = start_monitor(b, t, tmp / "state", port, ["--windows", "5m,1h"])
    p = Producer({"bootstrap.servers": b, "linger.ms": 20,
                  "queue.buffering.max.messages": 200_000})
    rng = np.random.default_rng(5)
    start = int(time.time() * 1000) - 30 * 3_600_000
    labels: list[tuple[int, str, int]] = []
    mean_delay_ms = args.mean_delay_h * 3_600_000
    samples: list[dict[str, Any]] = []
    t0 = last = time.monotonic()

    def send(topic: str, value: bytes, key: bytes, ts: int) -> None:
        while True:
            try:
                p.produce(topic, value, key, timestamp=ts)
                return
            except BufferError:
                p.poll(0.05)

    for i in range(args.events):
        ts = start + i  # 1,000 events per second of event time
        score = float(rng.random() ** 4)
        ident = f"acc-{i}"
        send(t["pred"], orjson.dumps({"id": ident, "score": score, "label": int(score >= 0.5),
                                      "model": "fraud", "model_version": "1", "event_ts": ts,
                                      "scored_at": ts}), ident.encode(), ts)
        heapq.heappush(labels, (ts + int(rng.exponential(mean_delay_ms)), ident,
                                int(rng.random() < score)))
        while labels and labels[0][0] <= ts:
            due, lid, y = heapq.heappop(labels)
            send(t["labels"], orjson.dumps({"id": lid, "label": y}), lid.encode(), due)
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            samples.append(sample(mon.pid, port, t0, i + 1))
    p.flush(300)
    while time.monotonic() - t0 < args.timeout:
        time.sleep(10)
        samples.append(sample(mon.pid, port, t0, args.events))
        if samples[-1]["predictions"] >= args.events and samples[-1]["lag"] == 0:
            break
    last_sample = samples[-1]
    pending = last_sample["predictions"] - last_sample["joined"]
    disk = sum(f.stat().st_size for f in (tmp / "state").rglob("*") if f.is_file())
    result = {"mode": "accelerated", "events": args.events, "horizon_h": 24,
              "event_time_h": round(args.events / 3_600_000, 2),
              "mean_label_delay_h": args.mean_delay_h, "samples": samples,
              "pending_predictions": pending, "state_disk_mib": round(disk / 2**20, 1),
              "disk_bytes_per_pending": round(disk / max(pending, 1), 1),
              "monitor_peak_rss_mib": round(rss_mib(mon.pid, PEAK))}
    mon.send_signal(signal.SIGTERM)
    mon.wait(120)
    return result


def sample(pid: int, port: int, t0: float, sent: int) -> dict[str, Any]:
    m = scrape(port)
    s = {"s": round(time.monotonic() - t0), "sent": sent, "rss_mib": round(rss_mib(pid, NOW)),
         "predictions": int(m.get("scoring_monitor_predictions_total", 0)),
         "joined": int(m.get("scoring_monitor_joined_total", 0)), "lag": int(m.get("lag", 0)),
         "disk_mib": round(m.get("scoring_monitor_state_disk_bytes", 0) / 2**20, 1),
         "rocksdb_mib": round(m.get("scoring_monitor_state_memory_bytes", 0) / 2**20)}
    print(orjson.dumps(s).decode(), file=sys.stderr, flush=True)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=["live", "accelerated"])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--label-delay", type=float, default=10.0)
    ap.add_argument("--events", type=int, default=3_000_000)
    ap.add_argument("--mean-delay-h", type=float, default=12.0)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--feature-stats", action="store_true",
                    help="live: feature statistics from the worker, drift windows in the monitor")
    ap.add_argument("--baseline-monitor", action="store_true",
                    help="live: a second monitor on the same traffic without the estimates")
    ap.add_argument("--traced", default="", metavar="FILE",
                    help="live: run the monitor under tracemalloc (bench/traced.py) and write "
                         "the allocation sites that grew, every minute, to FILE")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="monitor-soak-"))
    run = f"soak-{uuid.uuid4().hex[:6]}"
    t = {"run": run, **{k: f"{run}-{k}" for k in ("in", "pred", "dlq", "labels", "metrics",
                                                    "alerts", "stats", "fstats")}}
    kafka_io.create_topics(args.bootstrap, {t["in"]: 4, t["pred"]: 4, t["dlq"]: 1,
                                            t["labels"]: 4, t["metrics"]: 1, t["alerts"]: 1,
                                            t["stats"]: 1, t["fstats"]: 1})
    try:
        result = live(args, t, tmp) if args.mode == "live" else accelerated(args, t, tmp)
    finally:
        internal = [f"{r}-monitor-{s}" for r in (run, f"{run}-base")
                    for s in ("join", "partials", "join-changelog", "global-changelog",
                              "feature-changelog")]
        kafka_io.delete_topics(args.bootstrap, [v for k, v in t.items() if k != "run"]
                               + internal)
        shutil.rmtree(tmp, ignore_errors=True)
    print(orjson.dumps(result, default=float).decode())


if __name__ == "__main__":
    main()
