"""Broker outages mid-stream, on a broker of the test's own (never the shared one): the
worker keeps running and reports honestly (/healthz 200 while it only waits, /readyz
503 while the broker is away and 200 after), logs the outage once per state change,
and loses nothing (exactly-once: duplicates nothing either)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.faults import (
    Feeder,
    PrivateBroker,
    ProbeLog,
    lost_and_duplicated,
    read_keys,
)
from tests.integration.helpers import WorkerProc, wait_for
from worker import kafka_io
from worker.devtools.demo import train_demo
from worker.devtools.demo_run import free_port


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    b = PrivateBroker(tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.close()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=3, n=20_000)


def start_worker(broker: PrivateBroker, name: str, model: Path, guarantee: str,
                 log: Path) -> tuple[WorkerProc, dict[str, str], int]:
    topics = {k: f"{name}-{k}" for k in ("in", "out", "dlq")}
    kafka_io.create_topics(broker.bootstrap, {topics["in"]: 4, topics["out"]: 4,
                                              topics["dlq"]: 1})
    port = free_port()
    w = WorkerProc(["--bootstrap", broker.bootstrap, "--input-topic", topics["in"],
                    "--output-topic", topics["out"], "--dlq-topic", topics["dlq"],
                    "--group", name, "--model", str(model), "--metrics-port", str(port),
                    "--guarantee", guarantee, "--instance-id", name, "--batch-max", "500",
                    # After a broker kill -9 the group may hand the partitions back only
                    # once the old session expires: the readiness figures depend on it
                    # (10 s, the default, stated here so that they stay comparable).
                    "--session-timeout-s", "10"],
                   log)
    return w, topics, port


def outage(probes: ProbeLog, down: Callable[[], None], up: Callable[[], None],
           seconds: float) -> tuple[float, float | None, float | None]:
    """Take the broker away for ``seconds``; when it went, and how long /readyz took to
    say 503 after it went and 200 after it answered again (from the 500 ms probe log;
    200 also needs the group to hand the partitions back, which can wait for the
    consumer's previous session to expire)."""
    gone = probes.now()
    down()
    time.sleep(seconds)
    starting = probes.now()
    up()  # returns once the broker answers metadata requests again
    back = probes.now()
    wait_for(lambda: probes.rows[-1][0] >= back and probes.rows[-1][2] == 200, 120,
             "/readyz 200 after the broker is back")
    rows = [row for row in probes.rows if row[0] >= gone]
    to_503 = next((t - gone for t, _, r in rows if r == 503), None)
    # Ready again from the first row of the last run of 200s; 0 when the worker was
    # ready again before ``up`` returned (it reconnects as soon as the broker listens).
    settled = len(rows) - next((i for i, row in enumerate(reversed(rows)) if row[2] != 200),
                                  len(rows))
    to_200 = max(0.0, rows[settled][0] - back) if to_503 is not None else None
    said_503 = gone + (to_503 or 0.0)
    assert all(r != 200 for t, _, r in rows if said_503 < t < starting - 1.0), \
        f"/readyz said 200 while the broker was down: {probes.transitions()}"
    return gone, to_503, to_200


def healthz_failures(probes: ProbeLog) -> list[tuple[float, int, int]]:
    """/healthz answers other than 200 once the worker first answered."""
    first = next(i for i, row in enumerate(probes.rows) if row[1] == 200)
    return [row for row in probes.rows[first:] if row[1] != 200]


def test_stop_20s_then_kill9_40s_mid_stream(
    broker: PrivateBroker, bundle_dir: Path, tmp_path: Path, report: Callable[[str], None],
) -> None:
    w, topics, port = start_worker(broker, "outage-alo", bundle_dir, "at-least-once",
                                   tmp_path / "w.log")
    probes = ProbeLog(port)
    probes.start()
    wait_for(lambda: probes.rows and probes.rows[-1][2] == 200, 60, "/readyz 200")
    feeder = Feeder(broker.bootstrap, topics["in"], 120_000, rate=1000, bad_every=500)
    feeder.start()
    time.sleep(8)
    stop = outage(probes, broker.stop, broker.start, 20)
    time.sleep(8)
    kill = outage(probes, broker.kill, broker.start, 40)
    time.sleep(8)  # the stream goes on past the recovery (at most 120 s of it in all)
    feeder.halt()
    feeder.join()
    try:
        seen = read_keys(broker.bootstrap, [topics["out"], topics["dlq"]], len(feeder.sent),
                         timeout=180)
    finally:
        probes.stopped = True
        code = w.stop()
    lost, dup = lost_and_duplicated(feeder.sent, seen)
    health = healthz_failures(probes)
    log = w.output()
    lines = log.count("lost the connection to every broker"), log.count("connection restored")
    report(f"at-least-once, broker stop 20 s (503 after {stop[1]:.1f} s, 200 {stop[2]:.1f} s "
           f"after restart) then kill -9 40 s (503 after {kill[1]:.1f} s, 200 {kill[2]:.1f} s "
           f"after): "
           f"{len(feeder.sent)} in, {lost} lost, {dup} duplicated, exit {code}, /healthz "
           f"non-200 samples {len(health)}, connection log lines lost/restored {lines}; "
           f"probe transitions {probes.transitions()}")
    assert lost == 0
    assert code == 0, log[-3000:]
    assert health == []  # waiting is not stalling
    assert stop[1] is not None and kill[1] is not None  # /readyz said 503 during each outage
    assert stop[2] is not None and kill[2] is not None  # and 200 after
    assert 1 <= lines[0] <= 4 and lines[0] == lines[1]  # once per state change, not per try
    assert "Traceback" not in log


def test_broker_restart_mid_stream_exactly_once(
    broker: PrivateBroker, bundle_dir: Path, tmp_path: Path, report: Callable[[str], None],
) -> None:
    w, topics, port = start_worker(broker, "outage-eos", bundle_dir, "exactly-once",
                                   tmp_path / "w.log")
    probes = ProbeLog(port)
    probes.start()
    wait_for(lambda: probes.rows and probes.rows[-1][2] == 200, 60, "/readyz 200")
    feeder = Feeder(broker.bootstrap, topics["in"], 60_000, rate=1500, bad_every=500)
    feeder.start()
    time.sleep(8)
    restart = outage(probes, broker.stop, broker.start, 20)
    feeder.join()
    try:
        seen = read_keys(broker.bootstrap, [topics["out"], topics["dlq"]], len(feeder.sent),
                         committed_only=True, timeout=180)
    finally:
        probes.stopped = True
        code = w.stop()
    lost, dup = lost_and_duplicated(feeder.sent, seen)
    health = healthz_failures(probes)
    report(f"exactly-once, broker stop 20 s and start (503 after {restart[1]} s, 200 "
           f"{restart[2]} s after restart): {len(feeder.sent)} in, {lost} lost, {dup} "
           f"duplicated, exit {code}, /healthz non-200 samples {len(health)}; probe "
           f"transitions {probes.transitions()}")
    assert (lost, dup, code) == (0, 0, 0), w.output()[-3000:]
    assert health == []
    assert restart[1] is not None and restart[2] is not None
