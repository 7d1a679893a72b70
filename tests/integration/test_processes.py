"""``scoring-worker run --processes 2`` on the real broker: one supervisor, two consumers in
the group, one /metrics summing them, a child killed and restarted, SIGTERM stopping all."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.conftest import TopicFactory
from tests.integration.helpers import WorkerProc, produce, read_topic, wait_for
from worker.devtools.demo import make_events, train_demo
from worker.devtools.demo_run import free_port


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=3, n=5_000)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), ""
    except OSError:
        return 0, ""


def metric(body: str, name: str) -> float:
    """The value of an unlabelled series (or the sum of a labelled one's series)."""
    values = [float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.M)]
    assert values, f"{name} not in /metrics"
    return sum(values)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def send(bootstrap: str, topic: str, events: list[dict[str, object]], bad: int) -> None:
    items: list[tuple[bytes | None, bytes | None]] = [
        (str(e["card_id"]).encode(), orjson.dumps(e)) for e in events]
    items += [(b"bad", b"not json {")] * bad
    produce(bootstrap, topic, items)


def test_two_processes_score_everything_sum_their_metrics_and_stop_together(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, tmp_path: Path,
) -> None:
    topics = {"in": topic_factory("in", 4), "out": topic_factory("out", 4),
              "dlq": topic_factory("dlq", 1)}
    events, _ = make_events(np.random.default_rng(11), 6_000, 0, 1_790_000_000_000)
    port = free_port()
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", topics["in"],
                    "--output-topic", topics["out"], "--dlq-topic", topics["dlq"],
                    "--group", group_factory(), "--model", str(bundle_dir),
                    "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
                    "--processes", "2"],
                   tmp_path / "supervisor.log")
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 40, "/readyz of both processes")
        assert get(port, "/healthz")[0] == 200
        first = children_of(w.proc.pid)
        assert len(first) == 2, w.output()
        send(kafka_bootstrap, topics["in"], events[:3_000], 20)
        wait_for(lambda: metric(get(port, "/metrics")[1], "scoring_events_consumed_total")
                 >= 3_020, 40, "the first half scored")
        time.sleep(1.0)
        half = get(port, "/metrics")[1]  # no crash yet, so no repeat: exact sums
        assert metric(half, "scoring_events_consumed_total") == 3_020
        assert metric(half, "scoring_events_scored_total") == 3_000
        assert metric(half, "scoring_dead_letters_total") == 20
        # A crash: the child is restarted under the same index (the same static member,
        # which takes its partitions back at once); nothing is lost.
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: metric(get(port, "/metrics")[1],
                                "scoring_worker_process_restarts_total") == 1, 20, "a restart")
        send(kafka_bootstrap, topics["in"], events[3_000:], 20)
        preds = read_topic(kafka_bootstrap, topics["out"], len(events), settle=3.0)
        wait_for(lambda: get(port, "/readyz")[0] == 200, 40, "/readyz after the restart")
        body = get(port, "/metrics")[1]
        after = children_of(w.proc.pid)
    finally:
        code = w.stop(signal.SIGTERM, timeout=60)
    out = w.output()
    assert code == 0, out[-3000:]
    assert len(after) == 2 and first[1] in after and first[0] not in after
    ids = Counter(orjson.loads(p.value or b"{}")["id"] for p in preds)
    assert set(ids) == {e["id"] for e in events}  # at-least-once: nothing lost
    # Summed over the three processes (the killed one's counters stay in its files):
    # every event at least once, and the counters agree with each other.
    consumed = metric(body, "scoring_events_consumed_total")
    scored = metric(body, "scoring_events_scored_total")
    dead = metric(body, "scoring_dead_letters_total")
    assert scored >= len(events) and dead >= 40 and consumed == scored + dead
    assert metric(body, "scoring_worker_processes") == 2
    # The two survivors print their own totals on SIGTERM; /metrics adds them to the killed
    # one's counts (its files stay, only its live gauges go).
    totals = [tuple(map(int, m)) for m in re.findall(
        r"scoring-worker run: (\d+) consumed, (\d+) scored, (\d+) dead-lettered", out)]
    assert len(totals) == 2, out[-3000:]
    assert all(n > 0 for _, n, _ in totals)  # both scored their share
    assert "scoring-worker run: 2 worker processes stopped (exit 0)" in out
    assert not children_of(w.proc.pid)


def test_two_exactly_once_processes_write_each_output_once_across_a_killed_child(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, tmp_path: Path,
) -> None:
    """Each child has its own transactional id (<group>-<instance_id>-<index>): the two do
    not fence each other, and the restarted child, under its predecessor's id, aborts the
    transaction the kill left open. A read_committed reader sees every output once."""
    topics = {"in": topic_factory("in", 4), "out": topic_factory("out", 4),
              "dlq": topic_factory("dlq", 1)}
    events, _ = make_events(np.random.default_rng(12), 4_000, 0, 1_790_000_000_000)
    port = free_port()
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", topics["in"],
                    "--output-topic", topics["out"], "--dlq-topic", topics["dlq"],
                    "--group", group_factory(), "--model", str(bundle_dir),
                    "--guarantee", "exactly-once", "--instance-id", "eos",
                    "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
                    "--processes", "2"],
                   tmp_path / "supervisor.log")
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 40, "/readyz of both processes")
        first = children_of(w.proc.pid)
        send(kafka_bootstrap, topics["in"], events[:2_000], 0)
        wait_for(lambda: metric(get(port, "/metrics")[1], "scoring_events_scored_total")
                 >= 1_000, 30, "scoring under way")
        os.kill(first[0], signal.SIGKILL)
        send(kafka_bootstrap, topics["in"], events[2_000:], 0)
        preds = read_topic(kafka_bootstrap, topics["out"], len(events), timeout=40,
                           settle=2.0, committed_only=True)
        restarts = metric(get(port, "/metrics")[1], "scoring_worker_process_restarts_total")
    finally:
        code = w.stop(signal.SIGTERM, timeout=60)
    out = w.output()
    assert code == 0, out[-3000:]
    assert restarts == 1, out[-3000:]
    ids = Counter(orjson.loads(p.value or b"{}")["id"] for p in preds)
    assert set(ids) == {e["id"] for e in events}
    assert max(ids.values()) == 1, ids.most_common(3)  # exactly once, across the kill
