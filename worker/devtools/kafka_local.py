"""A local single-node Apache Kafka 4.x broker for development and tests, without Docker.

The broker's jars come from Maven Central through the machine's own ``mvn``
into a cache outside the repository; data, logs and the pid file live in a
state folder outside the repository too. The broker runs in KRaft mode as a
combined broker and controller, so one JVM is all it takes.

``Security`` adds a listener on ``port + 2`` with SASL/SCRAM-SHA-512 (``--sasl``),
TLS with a throwaway CA (``--tls``) or both (SASL_SSL); the PLAINTEXT listener
stays, for the broker itself and for tools.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from worker import kafka_io
from worker.devtools import kafka_fetch
from worker.devtools.kafka_secure import (
    Security,
    client_hints,
    client_properties,
    listener_lines,
    secure_port,
)
from worker.errors import KafkaFatalError, KafkaLocalError
from worker.settings_common import state_home

__all__ = ["Security", "client_hints", "client_properties", "secure_port"]

KAFKA_VERSION = "4.1.1"
# The published kafka_2.13 artifact ships no logging backend; without one the
# broker logs nothing and StorageTool warns about a missing SLF4J binding.
LOG4J_VERSION = "2.24.3"
# kafka-clients still depends on slf4j-api 1.7, which cannot see log4j's
# SLF4J 2 provider; pinning 2.x makes the binding work.
SLF4J_VERSION = "2.0.17"

NO_JAVA = (
    "kafka-local needs Java 17+ and Maven on PATH ({missing} not found): install them "
    "(Debian/Ubuntu: apt-get install openjdk-17-jdk-headless maven), "
    "or run a broker with `docker compose up -d kafka` and point --bootstrap at it"
)


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scoring-worker"


def _default_state() -> Path:
    return state_home() / "scoring-worker"


@dataclass(frozen=True)
class LocalBroker:
    """Where and how the local broker runs."""

    host: str = "127.0.0.1"
    #: Client (PLAINTEXT) port; the KRaft controller listens on ``port + 1``.
    port: int = 9092
    #: Apache Kafka release to resolve from Maven Central (4.x, KRaft only).
    version: str = KAFKA_VERSION
    #: Jar cache, shared by every port; reused on later starts.
    cache_root: Path = field(default_factory=_default_cache)
    #: Data, logs and pid file; one sub-folder per port so brokers never share.
    state_root: Path = field(default_factory=_default_state)
    #: JVM heap for the broker; small, as it only serves development and tests.
    heap: str = "768m"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def lib_dir(self) -> Path:
        return self.cache_root / f"kafka-{self.version}" / "lib"

    @property
    def state_dir(self) -> Path:
        return self.state_root / f"kafka-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"


def _server_properties(b: LocalBroker, security: Security | None = None) -> str:
    ctl = f"{b.host}:{b.port + 1}"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={ctl}",
            *listener_lines(b, security or Security()),
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={b.state_dir / 'data'}",
            "num.partitions=1",
            # One broker: internal topics cannot have more replicas than that,
            # or consumer groups and transactions never become available.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "min.insync.replicas=1",
            # Tests create many short-lived groups; no point waiting for stragglers.
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "delete.topic.enable=true",
            "",
        ]
    )


def _log4j_properties(b: LocalBroker) -> str:
    log = b.state_dir / "logs" / "server.log"
    return "\n".join(
        [
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = FILE",
            f"appender.file.fileName = {log}",
            f"appender.file.filePattern = {log}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 50MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = FILE",
            "",
        ]
    )


def _pom(b: LocalBroker) -> str:
    deps = [
        ("org.apache.kafka", "kafka_2.13", b.version),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
        ("org.slf4j", "slf4j-api", SLF4J_VERSION),
    ]
    xml = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.scoring-worker</groupId><artifactId>kafka-local</artifactId>"
        f"<version>1</version><packaging>pom</packaging><dependencies>{xml}</dependencies>"
        "</project>\n"
    )


def check_tools() -> None:
    """Fail with one actionable line when Java 17+ or Maven is missing."""
    kafka_fetch.check_tools(NO_JAVA)


def resolve_jars(b: LocalBroker, say: kafka_fetch.Progress = lambda _: None) -> Path:
    """Download the broker's jars once (saying what happens); later calls reuse the cache."""
    done = b.lib_dir.parent / ".complete"
    if done.exists():
        return b.lib_dir
    check_tools()
    kafka_fetch.resolve(_pom(b), b.lib_dir, f"org.apache.kafka:kafka_2.13:{b.version}", say)
    done.write_text(b.version + "\n")
    return b.lib_dir


def _java(b: LocalBroker, main: str, *args: str) -> list[str]:
    return [
        "java", f"-Xmx{b.heap}", f"-Xms{b.heap}", "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={b.state_dir / 'log4j2.properties'}",
        "-cp", f"{b.lib_dir}/*", main, *args,
    ]


def _cluster_id() -> str:
    """A random KRaft cluster id; never one starting with "-", which StorageTool would read
    as an option (one id in 64 did: Kafka's own Uuid.randomUuid skips them too)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _format_storage(b: LocalBroker, security: Security) -> None:
    """Write the config files and format the log dir once (KRaft needs a cluster id)."""
    (b.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    props = b.state_dir / "server.properties"
    props.write_text(_server_properties(b, security))
    props.chmod(0o600)  # it holds the keystore's password
    (b.state_dir / "log4j2.properties").write_text(_log4j_properties(b))
    if (b.state_dir / "data" / "meta.properties").exists():
        return
    cmd = _java(b, "kafka.tools.StorageTool", "format", "--standalone", "-t", _cluster_id(),
                "-c", str(props))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KafkaLocalError(f"formatting {b.state_dir / 'data'} failed: {proc.stderr.strip()}")


def _is_our_broker(pid: int, b: LocalBroker) -> bool:
    """True when pid is alive and is the java broker of this state folder (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "kafka.Kafka" in cmdline and str(b.state_dir / "server.properties") in cmdline


def running_pid(b: LocalBroker) -> int | None:
    """The pid of this broker if it runs, else None (a stale pid file is removed)."""
    try:
        pid = int(b.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if _is_our_broker(pid, b):
        return pid
    b.pid_file.unlink(missing_ok=True)
    return None


@dataclass(frozen=True)
class StartResult:
    pid: int
    already_running: bool
    ready_seconds: float


def start(b: LocalBroker, timeout: float = 120.0, security: Security | None = None,
          progress: kafka_fetch.Progress = lambda _: None) -> StartResult:
    """Start the broker unless it runs; return once a metadata request succeeds (and, with
    ``security``, once its user can authenticate on the secure listener)."""
    security = security or Security()
    pid = running_pid(b)
    if pid is not None:
        _check_running_matches(b, security)
        kafka_io.wait_for_broker(b.bootstrap, timeout)
        _secure_ready(b, security, timeout, progress)
        return StartResult(pid, already_running=True, ready_seconds=0.0)
    if kafka_io.port_open(b.host, b.port):
        raise KafkaLocalError(
            f"{b.bootstrap} is already in use by a process kafka-local did not start; "
            "stop it, or pick another port with --port"
        )
    resolve_jars(b, progress)
    check_tools()
    t0 = time.monotonic()
    if security.tls:
        progress(f"TLS: a throwaway CA and broker certificate (keytool) in {b.state_dir / 'tls'}")
    _format_storage(b, security)
    out = (b.state_dir / "logs" / "stdout.log").open("ab")
    cmd = _java(b, "kafka.Kafka", str(b.state_dir / "server.properties"))
    # A session of its own: the broker outlives this command and ignores the
    # terminal's Ctrl-C; `stop` ends it explicitly.
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    b.pid_file.write_text(f"{proc.pid}\n")
    progress(f"broker JVM started (pid {proc.pid}); waiting for {b.bootstrap} to answer")
    try:
        kafka_io.wait_for_broker(b.bootstrap, timeout, alive=lambda: proc.poll() is None)
        _secure_ready(b, security, timeout, progress)
    except Exception as exc:
        stop(b)
        raise KafkaLocalError(
            f"broker did not become ready on {b.bootstrap}: {exc} "
            f"(see {b.state_dir / 'logs' / 'server.log'}){_kept_data_hint(b, timeout)}"
        ) from exc
    return StartResult(proc.pid, already_running=False, ready_seconds=time.monotonic() - t0)


def _kept_data_hint(b: LocalBroker, timeout: float) -> str:
    """Why a start can outlast the timeout: a broker loads (after an unclean stop, recovers)
    every partition earlier runs left, and thousands of them take minutes."""
    data = b.state_dir / "data"
    kept = sum(1 for d in data.iterdir() if d.is_dir()) if data.is_dir() else 0
    if kept < 500:
        return ""
    return (f"; its data holds {kept} partitions from earlier runs: raise --timeout "
            f"(now {timeout:g}s), or empty it with `scoring-worker kafka-local reset "
            f"--port {b.port}`")


def _check_running_matches(b: LocalBroker, security: Security) -> None:
    """A running broker keeps its listeners: asking for another security set-up is an error."""
    props = (b.state_dir / "server.properties").read_text(errors="replace")
    wanted = f"SECURE:{security.protocol}" if security.enabled else None
    has = next((p for p in ("SECURE:SASL_SSL", "SECURE:SASL_PLAINTEXT", "SECURE:SSL")
                if p in props), None)
    if wanted != has and (security.enabled or has is not None):
        raise KafkaLocalError(
            f"the broker on {b.bootstrap} already runs with "
            f"{has.split(':')[1] if has else 'no secure listener'}; stop it first to start "
            f"it {'with ' + security.protocol if wanted else 'without --sasl/--tls'}")


def _secure_ready(b: LocalBroker, security: Security, timeout: float,
                  progress: kafka_fetch.Progress) -> None:
    """Create (or update) the SCRAM user, then wait until it can log in on port + 2."""
    if not security.enabled:
        return
    if security.user is not None:
        progress(f"adding the SCRAM-SHA-512 user {security.user}")
        kafka_io.upsert_scram_user(b.bootstrap, security.user, security.password or "")
    deadline = time.monotonic() + timeout
    while True:  # the new credential reaches the listener a moment after the upsert
        try:
            kafka_io.wait_for_broker(f"{b.host}:{secure_port(b)}", timeout,
                                     extra=client_properties(b, security))
            return
        except KafkaFatalError as exc:
            if "authentication" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop(b: LocalBroker, timeout: float = 60.0) -> bool:
    """Stop the broker this launcher started; True if one was running."""
    pid = running_pid(b)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _is_our_broker(pid, b):
        _reap(pid)
        time.sleep(0.2)
    if _is_our_broker(pid, b):
        os.kill(pid, signal.SIGKILL)
        while _is_our_broker(pid, b):
            _reap(pid)
            time.sleep(0.1)
    b.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status when the broker is our own child, so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def reset(b: LocalBroker) -> None:
    """Delete the broker's data (it must be stopped)."""
    if running_pid(b) is not None:
        raise KafkaLocalError("stop the broker before resetting its data")
    shutil.rmtree(b.state_dir, ignore_errors=True)
