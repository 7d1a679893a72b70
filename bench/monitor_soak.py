"""Monitor memory soaks: live traffic through a worker, and a 24 h horizon in accelerated time.

    flock /tmp/heavy.lock python bench/monitor_soak.py live --seconds 600 --rate 5000
    flock /tmp/heavy.lock python bench/monitor_soak.py accelerated --events 3000000

``live``: demo transactions at ``--rate`` events/s through one worker, their labels
``--label-delay`` seconds late, into one monitor (default settings: 24 h horizon, 1 h
dedup window, state on disk). Samples both processes' RSS every 10 s and reports the
monitor's growth after the first minute. The demo model carries a calibration map, so the
monitor computes its estimated figures; ``--feature-stats`` also has the worker publish
feature statistics and the monitor keep per-feature drift windows. ``--baseline-monitor``
runs a second monitor beside it on the same traffic (its own group and state), given the
same bundle without its calibration map: the same run without the estimates, whose RSS is
reported the same way (``baseline_*``). ``--monitors full,plain`` names the monitors to run
side by side instead (``CONFIGS``: feature windows and estimates, either, or neither), each
reported under its name with its RSS curve (RSS, RocksDB's cache and lag each minute).

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
import os
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
from procstat import ANON, NOW, PEAK, rss_mib  # bench/procstat.py: this folder is on sys.path

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
                  extra: list[str], traced: str = "", heap: bool = False,
                  code: str = "") -> subprocess.Popen[bytes]:
    # --traced FILE: the monitor under tracemalloc (bench/traced.py), what grew into FILE;
    # heap: bench/traced.py's cheap mode instead, where the RSS is, every 10 s, into FILE
    # code: another checkout's worker package first on the path, and its folder the working
    # one (which Python puts first): a before/after in one run
    env = {**os.environ, **({"TRACED_MODE": "heap"} if heap else {}),
           **({"PYTHONPATH": code} if code else {})}
    run = ([sys.executable, str(Path(__file__).with_name("traced.py")), traced] if traced
           else [sys.executable, "-m", "worker"])
    return subprocess.Popen(
        [*run, "monitor", "--bootstrap", b,
         "--predictions-topic", t["pred"], "--labels-topic", t["labels"],
         "--metrics-topic", t["metrics"], "--alerts-topic", t["alerts"],
         "--stats-topic", t["stats"], "--group", f"{t['run']}-monitor", "--instance-id",
         "soak", "--metrics-port", str(port), "--state-dir", str(state),
         "--log-level", "WARNING", *extra], env=env, cwd=code or None)


#: A monitor configuration of the live soak: (feature drift windows, estimates).
CONFIGS: dict[str, tuple[bool, bool]] = {
    "full": (True, True), "features": (True, False), "estimates": (False, True),
    "plain": (False, False)}


def live_configs(args: argparse.Namespace) -> list[str]:
    """The monitors to run side by side: ``--monitors``, or the older flags' meaning
    (one monitor, ``full`` with ``--feature-stats`` else ``estimates``; ``--baseline-monitor``
    adds the same without the calibration map)."""
    if args.monitors:
        names = [n.strip() for n in args.monitors.split(",") if n.strip()]
        bad = [n for n in names if n.partition("@")[0] not in CONFIGS
               or n.partition("@")[2] not in ("", "base") or ("@" in n and not args.base_code)]
        if bad or not names:
            raise SystemExit(f"--monitors: one or more of {', '.join(CONFIGS)}, each optionally "
                             f"with @base (needs --base-code); not {bad}")
        return names
    first = "full" if args.feature_stats else "estimates"
    return [first, *(["features" if args.feature_stats else "plain"]
                     if args.baseline_monitor else [])]


def live(args: argparse.Namespace, t: dict[str, str], tmp: Path) -> dict[str, Any]:
    b = args.bootstrap
    names = live_configs(args)
    model = train_demo(tmp / "model", n=20_000)
    plain = without_calibration(model, tmp / "model-plain")
    wport = free_port()
    any_features = any(CONFIGS[n.partition("@")[0]][0] for n in names)
    stats = ["--feature-stats-topic", t["fstats"]] if any_features else []
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--bootstrap", b, "--input-topic", t["in"],
         "--output-topic", t["pred"], "--dlq-topic", t["dlq"], "--group", f"{t['run']}-w",
         "--model", str(model), "--metrics-port", str(wport),
         "--log-level", "WARNING", *stats])
    wait_ready(wport, worker, 60)
    mons: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    for i, name in enumerate(names):
        features, estimates = CONFIGS[name.partition("@")[0]]
        port = free_port()
        extra = ["--models", str(model if estimates else plain),
                 *(["--feature-stats-topic", t["fstats"]] if features else [])]
        traced = (f"{args.heap_dir}/{name}.jsonl" if args.heap_dir
                  else args.traced if i == 0 else "")
        slug = name.replace("@", "-")  # topic and group names take no "@"
        mons[name] = (start_monitor(b, {**t, "run": f"{t['run']}-{slug}"}, tmp / f"state-{slug}",
                                    port, extra, traced, heap=bool(args.heap_dir),
                                    code=args.base_code if name.endswith("@base") else ""),
                      port)
    count = int(args.rate * args.seconds)
    feed = subprocess.Popen(
        [sys.executable, "-m", "worker", "produce-demo", "--bootstrap", b, "--topic", t["in"],
         "--count", str(count), "--rate", str(args.rate), "--labels-topic", t["labels"],
         "--label-delay", str(args.label_delay)], stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = []
    while feed.poll() is None and time.monotonic() - t0 < args.seconds + 120:
        time.sleep(10)
        sample_ = {"s": round(time.monotonic() - t0),
                   "worker_rss_mib": round(rss_mib(worker.pid, NOW))}
        for name, (proc, port) in mons.items():
            m = scrape(port)
            sample_[name] = {
                "rss_mib": round(rss_mib(proc.pid, NOW)),
                "anon_mib": round(rss_mib(proc.pid, ANON)),
                "joined": int(m.get("scoring_monitor_joined_total", 0)),
                "lag": int(m.get("lag", 0)),
                "rocksdb_mib": round(m.get("scoring_monitor_state_memory_bytes", 0) / 2**20)}
        samples.append(sample_)
        print(orjson.dumps(sample_).decode(), file=sys.stderr, flush=True)
    result: dict[str, Any] = {"mode": "live", "rate": args.rate, "seconds": args.seconds,
                              "label_delay_s": args.label_delay, "monitors": names,
                              "samples": samples,
                              "worker_peak_rss_mib": round(rss_mib(worker.pid, PEAK))}
    for name, (proc, _) in mons.items():
        after_1m = [s[name]["rss_mib"] for s in samples if s["s"] >= 60]
        result.update(rss_summary(name, after_1m))
        result[f"{name}_peak_rss_mib"] = round(rss_mib(proc.pid, PEAK))
        result[f"{name}_curve_mib"] = curve(samples, name)
    for p in (feed, *(proc for proc, _ in mons.values()), worker):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        p.wait(120)
    return result


def curve(samples: list[dict[str, Any]], name: str) -> list[tuple[int, int, int, int]]:
    """(s, RSS, RocksDB's cache, lag) about every minute: flat or growing, at a glance."""
    return [(s["s"], s[name]["rss_mib"], s[name]["rocksdb_mib"], s[name]["lag"])
            for s in samples if s["s"] % 60 < 10]


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
    ap.add_argument("--monitors", default="", metavar="NAMES",
                    help="live: monitors side by side on the same traffic, each with its own "
                         "group and state: full (feature windows and estimates), features, "
                         "estimates, plain (neither)")
    ap.add_argument("--traced", default="", metavar="FILE",
                    help="live: run the first monitor under tracemalloc (bench/traced.py) and "
                         "write the allocation sites that grew, every minute, to FILE")
    ap.add_argument("--base-code", default="", metavar="DIR",
                    help="live: a checkout whose worker package the NAME@base monitors run "
                         "(for example `git archive main | tar -x -C DIR`)")
    ap.add_argument("--heap-dir", default="", metavar="DIR",
                    help="live: every monitor under bench/traced.py's heap mode (no "
                         "tracemalloc): RSS, glibc's and Python's allocators every 10 s, "
                         "into DIR/NAME.jsonl")
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
        internal = [f"{r}-monitor-{s}" for r in (run, *(f"{run}-{c}{b}" for c in CONFIGS
                                                      for b in ("", "-base")))
                    for s in ("join", "partials", "join-changelog", "global-changelog",
                              "feature-changelog")]
        kafka_io.delete_topics(args.bootstrap, [v for k, v in t.items() if k != "run"]
                               + internal)
        shutil.rmtree(tmp, ignore_errors=True)
    print(orjson.dumps(result, default=float).decode())


if __name__ == "__main__":
    main()
