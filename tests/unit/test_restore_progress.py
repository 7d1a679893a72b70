"""A restore that moves forward keeps /healthz at 200 however long it takes, and keeps
/readyz at 503 until it is done; its progress is counted (records, share of offsets)."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry

from worker.devtools.demo_run import free_port
from worker.probes import Health, serve


def test_a_moving_restore_is_alive_and_not_ready() -> None:
    now = [100.0]
    health = Health(stall_s=10, clock=lambda: now[0], last_turn=100.0, model_loaded=True,
                    assigned=True, broker_ok=True)
    assert health.ready()
    progress = health.restore
    progress.started(1000)
    assert not health.ready()  # restoring: not ready
    for step in range(1, 11):
        now[0] += 8  # 80 s in all, far past stall_s, but each step moves forward
        progress.advanced(records=90, offsets=100)
        assert health.healthy()
        assert abs(progress.share() - step / 10) < 1e-12
    assert progress.records == 900
    progress.finished()
    assert health.ready()
    assert progress.share() == 1.0


def test_a_stuck_restore_turns_liveness_off() -> None:
    now = [100.0]
    health = Health(stall_s=10, clock=lambda: now[0], last_turn=100.0)
    health.restore.started(500)
    health.restore.advanced(10, 10)
    now[0] += 11  # nothing read for longer than stall_s
    assert not health.healthy()


def test_two_restores_at_once_share_one_progress() -> None:
    health = Health(stall_s=10)
    p = health.restore
    p.started(100)
    p.started(300)
    p.advanced(50, 100)  # the first is done
    assert p.share() == 0.25
    p.finished()
    assert p.running == 1 and p.share() == 0.25  # the second still runs
    p.advanced(300, 300)
    p.finished()
    assert (p.running, p.share(), p.records) == (0, 1.0, 350)


def test_restore_progress_is_on_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from worker.monitor_app.restore_gauges import RestoreCollector

    registry = CollectorRegistry()
    health = Health(stall_s=10)
    RestoreCollector(registry, health.restore)
    health.restore.started(400)
    health.restore.advanced(90, 100)
    text = generate_latest(registry).decode()
    assert "scoring_monitor_restored_records_total 90.0" in text
    assert "scoring_monitor_restore_done_ratio 0.25" in text
    assert "scoring_monitor_restores_running 1.0" in text


def test_the_503_of_readyz_names_each_failing_condition() -> None:
    """What an on-call engineer reads from ``curl /readyz``: every condition that keeps it
    503, through the real HTTP server."""
    health = Health(stall_s=10, model_loaded=True, broker_ok=False, assigned=False)
    health.restore.started(400)
    health.restore.advanced(records=100, offsets=100)
    assert health.not_ready() == ["broker not reachable", "restoring state (25% done)",
                                  "no partitions assigned"]
    port = free_port()
    server = serve(port, CollectorRegistry(), health, "127.0.0.1")
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        try:
            urllib.request.urlopen(url, timeout=5)
            raise AssertionError("/readyz answered 200")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert exc.read() == (b"not ready: broker not reachable; restoring state "
                                  b"(25% done); no partitions assigned\n")
        health.broker_ok, health.assigned = True, True
        health.restore.finished()
        assert health.not_ready() == []
        with urllib.request.urlopen(url, timeout=5) as r:
            assert (r.status, r.read()) == (200, b"ready\n")
    finally:
        server.shutdown()
