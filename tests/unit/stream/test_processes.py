"""``run --processes N`` without a broker: the metrics of several processes summed by
prometheus_client's multiprocess mode, the probes' verdict from the children's reports,
the setting, and the supervisor's failure rules with real child processes that fail."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from tests.unit.helpers import logistic, save
from worker.config import Settings
from worker.shutdown import StopFlag
from worker.stream import processes
from worker.stream.child_report import ChildrenHealth, ChildState, Report

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import orjson
    from prometheus_client import CollectorRegistry
    from worker.stream.metrics import WorkerMetrics

    part, events = sys.argv[1], int(sys.argv[2])
    m = WorkerMetrics(CollectorRegistry())
    assert m.shared
    m.consumed.inc(events)
    m.dead_letters.labels("decode").inc(1)
    m.latency.observe_many(np.full(events, 0.003))
    m.inflight.set(events)
    lags = {part: {"consumer_lag": 10}, "9": {"consumer_lag": 5}}
    stats = {"topics": {"t": {"partitions": lags}}}
    m.consumer_stats(orjson.dumps(stats).decode())
    stats = {"topics": {"t": {"partitions": {part: {"consumer_lag": 10}}}}}
    m.consumer_stats(orjson.dumps(stats).decode())  # partition 9 moved away: zeroed
""")


def series(body: str) -> dict[str, float]:
    rows = [line.rsplit(" ", 1) for line in body.splitlines()
            if line and not line.startswith("#")]
    return {name: float(value) for name, value in rows}


def test_the_processes_metrics_add_up_and_an_exited_ones_gauges_leave(tmp_path: Path) -> None:
    env = {**os.environ, processes.MULTIPROC_ENV: str(tmp_path)}
    for part, events in (("0", 100), ("1", 250)):
        done = subprocess.run([sys.executable, "-c", CHILD, part, str(events)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    got = series(generate_latest(registry).decode())
    assert got["scoring_events_consumed_total"] == 350
    assert got['scoring_dead_letters_total{reason="decode"}'] == 2
    assert got['scoring_end_to_end_latency_seconds_bucket{le="0.005"}'] == 350
    assert got['scoring_end_to_end_latency_seconds_bucket{le="0.002"}'] == 0
    assert got["scoring_end_to_end_latency_seconds_count"] == 350
    assert got["scoring_end_to_end_latency_seconds_sum"] == pytest.approx(1.05)
    assert got['scoring_consumer_lag_messages{partition="0",topic="t"}'] == 10
    assert got['scoring_consumer_lag_messages{partition="9",topic="t"}'] == 0
    assert got["scoring_inflight_events"] == 350
    # The children exited: their live gauges go with mark_process_dead, counters stay.
    for f in tmp_path.glob("gauge_livesum_*.db"):
        mark_process_dead(int(f.stem.rsplit("_", 1)[1]), str(tmp_path))
    got = series(generate_latest(registry).decode())
    assert "scoring_inflight_events" not in got
    assert got["scoring_events_consumed_total"] == 350


def state(flags: Report, heard: float | None = 10.0, running: bool = True) -> ChildState:
    return ChildState(flags, heard, running)


def health(*children: ChildState) -> ChildrenHealth:
    return ChildrenHealth(stall_s=5.0, clock=lambda: 12.0, children=lambda: children)


def test_the_probes_are_healthy_only_while_every_child_is() -> None:
    ok = Report.HEALTHY | Report.SERVING | Report.ASSIGNED
    standby = Report.HEALTHY | Report.SERVING  # a child with no partition to own
    assert health(state(ok), state(standby)).healthy()
    assert health(state(ok), state(standby)).ready()
    assert health(state(ok), state(Report(0), heard=None)).healthy()  # still starting
    assert not health(state(ok), state(Report(0), heard=None)).ready()
    assert not health(state(ok), state(Report.SERVING)).healthy()  # its loop stalled
    assert not health(state(ok), state(ok, heard=6.0)).healthy()  # silent past stall_s
    assert not health(state(ok), state(ok, running=False)).healthy()  # exited
    assert not health(state(standby), state(standby)).ready()  # nobody owns a partition
    assert not health(state(ok), state(Report.HEALTHY | Report.ASSIGNED)).ready()


def test_processes_is_a_count_or_auto() -> None:
    assert Settings().processes == "1"
    assert Settings(processes="AUTO").processes == "auto"
    assert Settings(processes="08").processes == "8"
    for bad in ("0", "257", "two", "-1"):
        with pytest.raises(Exception, match="processes"):
            Settings(processes=bad)
    assert processes.process_count("auto", 6) == 6
    assert processes.process_count("3", 6) == 3
    assert 1 <= processes.available_cores() <= len(os.sched_getaffinity(0))


def supervise(tmp_path: Path, *flags: str, count: int = 2) -> tuple[int, processes.Supervisor]:
    argv = ["run", "--input-topic", "in", "--output-topic", "out", "--log-level", "ERROR",
            *flags]
    s = Settings(metrics_port=0, flush_timeout_s=5)
    sup = processes.Supervisor(s, argv, count, StopFlag(), tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    return sup.run(), sup


def test_a_child_with_a_configuration_error_stops_all_with_exit_2(tmp_path: Path) -> None:
    code, sup = supervise(tmp_path, "--model", str(tmp_path / "no-such-bundle"))
    assert code == 2
    assert not sup.restarts  # no restart fixes a configuration error
    assert all(c.proc.poll() is not None for c in sup.children)


def test_children_that_keep_failing_fail_the_supervisor_after_the_restart_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processes, "RESTART_LIMIT", 1)
    model = save(tmp_path / "model", logistic())
    code, sup = supervise(tmp_path, "--model", str(model), "--bootstrap", "127.0.0.1:9",
                          "--start-timeout-s", "0.2", count=1)
    assert code == 1  # a broker that never answers: exit 1, restarted once, then given up
    assert len(sup.restarts) == 1
    assert sup.metrics.restarts._value.get() == 1


def test_a_child_reports_its_probes_and_stops_when_the_supervisor_is_gone() -> None:
    from worker.probes import Health
    from worker.stream.child_report import start_reporting

    h = Health(stall_s=30.0, model_loaded=True, broker_ok=True)
    stop = StopFlag()
    read_end, write_end = os.pipe()
    thread = start_reporting(write_end, h, stop, every_s=0.01)
    assert Report(os.read(read_end, 1)[0]) == Report.HEALTHY | Report.SERVING
    h.assigned = True
    while Report(os.read(read_end, 1)[0]) != Report.HEALTHY | Report.SERVING | Report.ASSIGNED:
        pass
    os.close(read_end)  # the supervisor died: the next write fails
    thread.join(5)
    assert stop.requested
    os.close(write_end)


def test_the_supervisor_hears_its_children_and_stops_them_all_cleanly(tmp_path: Path) -> None:
    """Children waiting for a broker that does not answer: they report healthy and own no
    partition; the stop flag (SIGTERM's) stops them all, each exits 0, so does the supervisor."""
    import threading
    import time

    model = save(tmp_path / "model", logistic())
    argv = ["run", "--input-topic", "in", "--output-topic", "out", "--log-level", "ERROR",
            "--model", str(model), "--bootstrap", "127.0.0.1:9", "--start-timeout-s", "120"]
    (tmp_path / "metrics").mkdir()
    stop = StopFlag()
    sup = processes.Supervisor(Settings(metrics_port=0), argv, 2, stop, tmp_path / "metrics")
    heard: list[list[ChildState]] = []

    def stop_once_heard() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [c.state for c in sup.children]
            if len(states) == 2 and all(s.heard is not None for s in states):
                heard.append([ChildState(s.flags, s.heard) for s in states])
                break
            time.sleep(0.05)
        stop()

    threading.Thread(target=stop_once_heard, daemon=True).start()
    assert sup.run() == 0
    assert heard and all(Report.HEALTHY in s.flags and Report.ASSIGNED not in s.flags
                         for s in heard[0])
    probes = ChildrenHealth(stall_s=30.0, clock=lambda: heard[0][1].heard or 0.0,
                            children=lambda: heard[0])
    assert probes.healthy() and not probes.ready()  # alive, but nobody owns a partition
    assert [c.proc.returncode for c in sup.children] == [0, 0]
    assert not sup.restarts


def test_each_child_has_its_own_transactional_id_and_static_member_id() -> None:
    """Exactly-once with --processes: two children sharing a transactional id would fence
    each other on every batch. Each child's id ends in its index, and a restarted child
    (same index) gets its predecessor's ids back, so it fences the killed one's transaction."""
    from worker import kafka_io
    from worker.cli import build_parser, load_settings

    argv = ["run", "--model", "m", "--group", "g", "--guarantee", "exactly-once",
            "--instance-id", "pod-a", "--processes", "2"]
    parent = load_settings(build_parser().parse_args(argv))

    def child(index: int) -> tuple[str, str, str]:
        s = load_settings(build_parser().parse_args(processes.child_argv(parent, argv, index)))
        assert s.processes == "1" and s.metrics_port == 0
        return (kafka_io.producer_config(s)["transactional.id"],
                kafka_io.consumer_config(s)["group.instance.id"], s.worker_id)

    first, second = child(0), child(1)
    assert first[:2] == ("g-pod-a-0", "pod-a-0")
    assert second[:2] == ("g-pod-a-1", "pod-a-1")
    assert first[2] != second[2]
    assert child(0) == first  # a restart under the same index


def test_the_supervisors_503_names_the_processes_that_keep_it() -> None:
    ok = Report.HEALTHY | Report.SERVING | Report.ASSIGNED
    standby = Report.HEALTHY | Report.SERVING
    assert health(state(ok), state(standby)).not_ready() == []
    assert health(state(ok), state(Report(0), heard=None)).not_ready() == [
        "process 1: starting"]
    assert health(state(ok), state(ok, heard=6.0), state(ok, running=False)).not_ready() == [
        "process 1: no report", "process 2: not running"]
    assert health(state(standby), state(Report.HEALTHY)).not_ready() == [
        "process 1: not serving", "no process owns partitions"]
