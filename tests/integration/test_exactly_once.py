"""Both delivery guarantees under crashes and rebalances, on the real broker.

Exactly-once: a read_committed reader sees every input id exactly once (predictions
and dead letters together) and nothing from aborted transactions. At-least-once: every
id at least once; the duplicates are reported.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.faults import Feeder, lost_and_duplicated, read_keys
from tests.integration.helpers import WorkerProc
from worker.devtools.demo import train_demo

TopicFactory = Callable[..., str]
#: A killed worker's partitions wait for its session to expire: keep that short.
FAST_GROUP = ["--kafka", "session.timeout.ms=6000", "--kafka", "heartbeat.interval.ms=1000"]
MODES = ["exactly-once", "at-least-once"]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=3, n=20_000)


def worker_args(bootstrap: str, topics: dict[str, str], group: str, model: Path,
                guarantee: str, instance: str) -> list[str]:
    return ["--bootstrap", bootstrap, "--input-topic", topics["in"], "--output-topic",
            topics["out"], "--dlq-topic", topics["dlq"], "--group", group, "--model",
            str(model), "--metrics-port", "0", "--batch-max", "500", "--guarantee", guarantee,
            "--instance-id", instance, "--log-level", "WARNING", *FAST_GROUP]


def outcome(bootstrap: str, topics: dict[str, str], sent: list[bytes],
            guarantee: str) -> tuple[int, int, int]:
    """Lost, duplicated (as a read_committed reader sees them), and the records a
    read_uncommitted reader sees on top (outputs of aborted transactions). Every worker
    was stopped: the readers read to the end of each partition."""
    outs = [topics["out"], topics["dlq"]]
    committed = read_keys(bootstrap, outs, len(sent), committed_only=True, writers_gone=True)
    lost, dup = lost_and_duplicated(sent, committed)
    extra = 0
    if guarantee == "exactly-once":
        everything = read_keys(bootstrap, outs, len(sent), committed_only=False,
                               writers_gone=True)
        extra = sum(everything.values()) - sum(committed.values())
        assert set(committed) <= set(sent)
    return lost, dup, extra


@pytest.mark.parametrize("guarantee", MODES)
def test_five_kill9_at_random_moments_then_sigterm(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, tmp_path: Path, guarantee: str, report: Callable[[str], None],
) -> None:
    topics = {"in": topic_factory("in", 4), "out": topic_factory("out", 4),
              "dlq": topic_factory("dlq", 1)}
    group = group_factory()
    args = worker_args(kafka_bootstrap, topics, group, bundle_dir, guarantee, f"k9-{group}")
    feeder = Feeder(kafka_bootstrap, topics["in"], 100_000, rate=3000, bad_every=250)
    w = WorkerProc(args, tmp_path / "w0.log")
    feeder.start()
    t0 = time.monotonic()
    moments = []
    rng = random.Random()
    for k in range(5):
        time.sleep(rng.uniform(1.5, 7.0))
        moments.append(round(time.monotonic() - t0, 1))
        assert w.stop(signal.SIGKILL) == -signal.SIGKILL
        w = WorkerProc(args, tmp_path / f"w{k + 1}.log")
    feeder.join()
    try:
        read_keys(kafka_bootstrap, [topics["out"], topics["dlq"]], len(feeder.sent),
                  committed_only=True, timeout=180, settle=0)  # caught up
    finally:
        assert w.stop() == 0, w.output()  # the final SIGTERM
    lost, dup, aborted = outcome(kafka_bootstrap, topics, feeder.sent, guarantee)
    report(f"{guarantee}, 5 kill -9 at {moments} s + SIGTERM: {len(feeder.sent)} in, "
           f"{lost} lost, {dup} duplicated (read_committed), {aborted} records of aborted "
           f"transactions hidden from read_committed")
    assert lost == 0
    if guarantee == "exactly-once":
        assert dup == 0


@pytest.mark.parametrize("guarantee", MODES)
def test_rebalance_one_three_one_workers_mid_stream(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, tmp_path: Path, guarantee: str, report: Callable[[str], None],
) -> None:
    topics = {"in": topic_factory("in", 4), "out": topic_factory("out", 4),
              "dlq": topic_factory("dlq", 1)}
    group = group_factory()

    def start(name: str) -> WorkerProc:
        args = worker_args(kafka_bootstrap, topics, group, bundle_dir, guarantee,
                           f"{name}-{group}")
        return WorkerProc(args, tmp_path / f"{name}.log")

    feeder = Feeder(kafka_bootstrap, topics["in"], 60_000, rate=2500, bad_every=300)
    a = start("a")
    feeder.start()
    time.sleep(6)
    b, c = start("b"), start("c")  # 1 -> 3
    time.sleep(10)
    codes = [b.stop(), c.stop()]  # 3 -> 1
    feeder.join()
    try:
        read_keys(kafka_bootstrap, [topics["out"], topics["dlq"]], len(feeder.sent),
                  committed_only=True, timeout=120, settle=0)
    finally:
        codes.append(a.stop())
    assert codes == [0, 0, 0], [w.output()[-2000:] for w in (a, b, c)]
    lost, dup, aborted = outcome(kafka_bootstrap, topics, feeder.sent, guarantee)
    report(f"{guarantee}, rebalance 1 -> 3 -> 1 workers: {len(feeder.sent)} in, {lost} lost, "
           f"{dup} duplicated, {aborted} records of aborted transactions hidden")
    assert lost == 0
    if guarantee == "exactly-once":
        assert dup == 0
