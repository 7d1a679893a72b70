"""Shared fixtures: a real Kafka broker for the session, and per-test topics and groups.

The broker is whatever listens on SCORING_TEST_KAFKA_PORT (default 9092), else a
throwaway one the project's launcher starts, unless SCORING_TEST_BOOTSTRAP names an
external one. Each test gets fresh topic and group names, so tests
never see each other's messages or offsets.

Under pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``) the controller finds or
starts the broker once and hands it to its workers through SCORING_TEST_BOOTSTRAP, and
each worker's measured figures come back to the controller's summary.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import free_ports
from worker import kafka_io
from worker.devtools import kafka_local, registry_local

TEST_PORT = int(os.environ.get("SCORING_TEST_KAFKA_PORT", "9092"))
FIGURES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = []


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print what tests measured (readiness times, duplicate counts) at the end of the log."""
    if config.stash[FIGURES]:
        terminalreporter.section("measured figures")
        for line in config.stash[FIGURES]:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its figures to the controller (``workeroutput``)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["figures"] = list(session.config.stash[FIGURES])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """The controller gathers a finished xdist worker's figures (``node``: xdist's
    WorkerController)."""
    node.config.stash[FIGURES].extend(getattr(node, "workeroutput", {}).get("figures", []))


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Record a measured figure; it appears in the test log's summary."""
    return pytestconfig.stash[FIGURES].append


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


# The throwaway broker's folder: fixed, so that a session killed before its teardown leaves a
# broker the next session recognises (and reuses, stops and deletes) instead of a stranger.
THROWAWAY = Path(tempfile.gettempdir()) / f"scoring-worker-test-kafka-{os.getuid()}"


@pytest.fixture(scope="session")
def kafka_bootstrap(report: Callable[[str], None]) -> Iterator[str]:
    """host:port of a real broker: whatever listens on the test port, or else a throwaway one.

    The throwaway broker starts from empty data and is stopped and deleted when the session
    ends. Reusing the long-lived data folder instead made a start after an unclean stop replay
    every topic earlier runs and benchmarks had left (39 GB once), longer than any timeout.
    """
    with session_broker(report) as bootstrap:
        yield bootstrap


XDIST_BROKER = pytest.StashKey[ExitStack]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """An xdist controller finds or starts the broker before it starts its workers (they
    inherit SCORING_TEST_BOOTSTRAP and XDG_STATE_HOME), so that they share one and the
    first to finish does not stop it under the other."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    stack = ExitStack()
    config.stash[XDIST_BROKER] = stack
    bootstrap = stack.enter_context(session_broker(config.stash[FIGURES].append))
    stack.enter_context(_environ("SCORING_TEST_BOOTSTRAP", bootstrap))


def pytest_unconfigure(config: pytest.Config) -> None:
    if XDIST_BROKER in config.stash:
        config.stash[XDIST_BROKER].close()


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    env = pytest.MonkeyPatch()
    env.setenv(name, value)
    try:
        yield
    finally:
        env.undo()


@contextmanager
def session_broker(report: Callable[[str], None]) -> Iterator[str]:
    """The session's broker (see kafka_bootstrap)."""
    external = os.environ.get("SCORING_TEST_BOOTSTRAP")
    if external:
        kafka_io.wait_for_broker(external, timeout=60)
        yield external
        return
    broker = kafka_local.LocalBroker(port=TEST_PORT, state_root=THROWAWAY / "scoring-worker")
    leftover = kafka_local.running_pid(broker) is not None
    if not leftover and kafka_io.port_open(broker.host, broker.port):
        kafka_io.wait_for_broker(broker.bootstrap, timeout=60)
        yield broker.bootstrap  # the developer's own broker: used, never stopped
        return
    # Through the environment, so that `scoring-worker kafka-local start` run by a test
    # (the quick start) finds this broker and reuses it.
    env = pytest.MonkeyPatch()
    env.setenv("XDG_STATE_HOME", str(THROWAWAY))
    try:
        if not leftover:
            shutil.rmtree(THROWAWAY, ignore_errors=True)
        result = kafka_local.start(broker)
        report(f"session broker (kafka-local, throwaway) ready in {result.ready_seconds:.1f}s")
        yield broker.bootstrap
    finally:
        kafka_local.stop(broker)
        env.undo()
        shutil.rmtree(THROWAWAY, ignore_errors=True)


# The throwaway registries' folder: fixed, so that a session killed before its teardown leaves
# registries (their pid files) that the next session finds and stops. One per clone: sessions
# of other clones on the same machine keep theirs.
# One per xdist worker too: each worker's session stops the leftovers of its own folder.
_CLONE = hashlib.sha1(str(Path(__file__).resolve().parent).encode()).hexdigest()[:8]
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
REGISTRIES = (Path(tempfile.gettempdir())
              / f"scoring-worker-test-registry-{os.getuid()}-{_CLONE}-{_WORKER}")


def stop_leftover_registries() -> None:
    for state in REGISTRIES.glob("registry-*"):
        registry_local.stop(registry_local.LocalRegistry(
            port=int(state.name.split("-")[1]), state_root=REGISTRIES))
    shutil.rmtree(REGISTRIES, ignore_errors=True)


def start_registry(report: Callable[[str], None], what: str) -> registry_local.LocalRegistry:
    """A registry of the tests' own on a free port (the caller stops it)."""
    r = registry_local.LocalRegistry(port=free_ports(1), state_root=REGISTRIES)
    result = registry_local.start(r, timeout=240)
    report(f"{what} (registry-local, Apicurio, port {r.port}) ready in "
           f"{result.ready_seconds:.1f}s")
    return r


@pytest.fixture(scope="session")
def schema_registry(report: Callable[[str], None]) -> Iterator[registry_local.LocalRegistry]:
    """A real schema registry (Apicurio, in memory) started for the session, then stopped."""
    stop_leftover_registries()
    r = start_registry(report, "session schema registry")
    try:
        yield r
    finally:
        stop_leftover_registries()


TopicFactory = Callable[..., str]


@pytest.fixture
def topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Create topics unique to this test; they are deleted when it ends."""
    created: list[str] = []
    prefix = request.node.name.split("[")[0][:40]

    def make(name: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        topic = f"{prefix}-{name}-{uuid.uuid4().hex[:8]}"
        kafka_io.create_topics(kafka_bootstrap, {topic: partitions}, config=config)
        created.append(topic)
        return topic

    yield make
    kafka_io.delete_topics(kafka_bootstrap, created)


@pytest.fixture
def group_factory(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Consumer group ids unique to this test."""
    prefix = request.node.name.split("[")[0][:40]
    return lambda: f"{prefix}-g-{uuid.uuid4().hex[:8]}"
