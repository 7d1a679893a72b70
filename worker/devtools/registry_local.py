"""A local schema registry for development and tests, without Docker: Apicurio Registry.

Apicurio publishes a ready-to-run Quarkus distribution on Maven Central (the ``all``
tar.gz); the machine's own ``mvn`` unpacks it once into the cache that holds the
broker's jars, outside the repository. The registry keeps its schemas in memory; its
logs and pid file live in a state folder beside the broker's (``registry-<port>``).
Clients speak Confluent's API to it at ``/apis/ccompat/v7``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from worker import kafka_io
from worker.devtools import kafka_fetch
from worker.devtools.kafka_local import _default_cache, _default_state
from worker.errors import KafkaLocalError

APICURIO_VERSION: Final = "2.6.13.Final"
CCOMPAT: Final = "/apis/ccompat/v7"
NO_JAVA: Final = (
    "registry-local needs Java 17+ and Maven on PATH ({missing} not found): install them "
    "(Debian/Ubuntu: apt-get install openjdk-17-jdk-headless maven), or run a registry "
    "with `docker compose up -d registry` and point --schema-registry at it"
)


@dataclass(frozen=True)
class LocalRegistry:
    """Where and how the local registry runs."""

    host: str = "127.0.0.1"
    port: int = 8081
    #: Apicurio Registry release unpacked from Maven Central.
    version: str = APICURIO_VERSION
    #: The distribution cache, shared with the broker's jars and by every port.
    cache_root: Path = field(default_factory=_default_cache)
    #: Logs and the pid file; one sub-folder per port.
    state_root: Path = field(default_factory=_default_state)
    heap: str = "256m"

    @property
    def url(self) -> str:
        """What clients take as ``--schema-registry`` (Confluent's API)."""
        return f"http://{self.host}:{self.port}{CCOMPAT}"

    @property
    def dist_dir(self) -> Path:
        return self.cache_root / f"apicurio-registry-{self.version}"

    @property
    def runner_jar(self) -> Path:
        return self.dist_dir / f"apicurio-registry-app-{self.version}-runner.jar"

    @property
    def state_dir(self) -> Path:
        return self.state_root / f"registry-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "registry.pid"


def fetch(r: LocalRegistry, say: kafka_fetch.Progress = lambda _: None) -> Path:
    """Unpack the distribution once (saying what happens); later calls reuse the cache."""
    done = r.dist_dir / ".complete"
    if done.exists():
        return r.dist_dir
    kafka_fetch.check_tools(NO_JAVA)
    coordinate = f"io.apicurio:apicurio-registry-app:{r.version}:tar.gz:all"
    staging = r.dist_dir.with_name(r.dist_dir.name + ".partial")
    work = r.dist_dir.with_name(r.dist_dir.name + ".mvn")  # Maven's plugin markers
    for folder in (staging, work):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    say(f"first start: fetching {coordinate} from Maven Central into {r.dist_dir} "
        "(about 142 MB; a few minutes on a fresh machine, later starts take about 5 s)")
    t0 = time.monotonic()
    kafka_fetch.run_maven(
        ["mvn", "-B", "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:unpack",
         f"-Dartifact={coordinate}", f"-DoutputDirectory={staging}"], coordinate, say,
        cwd=work)
    shutil.rmtree(work, ignore_errors=True)
    jars = list(staging.rglob(r.runner_jar.name))
    if not jars:
        raise KafkaLocalError(f"{coordinate} unpacked without {r.runner_jar.name}")
    shutil.rmtree(r.dist_dir, ignore_errors=True)
    jars[0].parent.rename(r.dist_dir)
    shutil.rmtree(staging, ignore_errors=True)
    done.write_text(r.version + "\n")
    say(f"unpacked Apicurio Registry {r.version} in {time.monotonic() - t0:.0f}s")
    return r.dist_dir


def _command(r: LocalRegistry) -> list[str]:
    return [
        "java", f"-Xmx{r.heap}", "-XX:+UseSerialGC",
        f"-Dquarkus.http.host={r.host}", f"-Dquarkus.http.port={r.port}",
        # Names this state folder, so that a pid is recognised as this registry's.
        f"-Dscoring.registry.state={r.state_dir}",
        "-jar", str(r.runner_jar),
    ]


def _is_ours(pid: int, r: LocalRegistry) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return f"-Dscoring.registry.state={r.state_dir} " in cmdline + " "


def running_pid(r: LocalRegistry) -> int | None:
    """The pid of this registry if it runs, else None (a stale pid file is removed)."""
    try:
        pid = int(r.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if _is_ours(pid, r):
        return pid
    r.pid_file.unlink(missing_ok=True)
    return None


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when the Confluent-compatible API at ``url`` lists its subjects."""
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


@dataclass(frozen=True)
class StartResult:
    pid: int
    already_running: bool
    ready_seconds: float


def start(r: LocalRegistry, timeout: float = 120.0,
          progress: kafka_fetch.Progress = lambda _: None) -> StartResult:
    """Start the registry unless it runs; return once its ccompat API answers."""
    pid = running_pid(r)
    if pid is not None:
        _wait_ready(r, timeout, lambda: True)
        return StartResult(pid, already_running=True, ready_seconds=0.0)
    if kafka_io.port_open(r.host, r.port):
        raise KafkaLocalError(f"{r.host}:{r.port} is already in use by a process "
                              "registry-local did not start; stop it, or pick another "
                              "port with --port")
    fetch(r, progress)
    t0 = time.monotonic()
    (r.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    out = (r.state_dir / "logs" / "stdout.log").open("ab")
    # A session of its own: the registry outlives this command and the terminal's Ctrl-C.
    proc = subprocess.Popen(_command(r), stdout=out, stderr=subprocess.STDOUT,
                            cwd=r.state_dir, start_new_session=True)
    r.pid_file.write_text(f"{proc.pid}\n")
    progress(f"registry JVM started (pid {proc.pid}); waiting for {r.url} to answer")
    try:
        _wait_ready(r, timeout, lambda: proc.poll() is None)
    except KafkaLocalError:
        stop(r)
        raise
    return StartResult(proc.pid, already_running=False, ready_seconds=time.monotonic() - t0)


def _wait_ready(r: LocalRegistry, timeout: float, alive: kafka_fetch.Alive) -> None:
    deadline = time.monotonic() + timeout
    while not answers(r.url):
        log = r.state_dir / "logs" / "stdout.log"
        if not alive():
            raise KafkaLocalError(f"the registry exited during its start (see {log})")
        if time.monotonic() > deadline:
            raise KafkaLocalError(f"the registry did not answer on {r.url} within "
                                  f"{timeout:g}s (see {log})")
        time.sleep(0.2)


def stop(r: LocalRegistry, timeout: float = 30.0, kill: bool = False) -> bool:
    """Stop the registry this launcher started (``kill``: SIGKILL at once); True if one ran."""
    pid = running_pid(r)
    if pid is None:
        return False
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_ours(pid, r):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child: leave no zombie
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    r.pid_file.unlink(missing_ok=True)
    return True


def reset(r: LocalRegistry) -> None:
    """Delete the registry's logs and state (it must be stopped; schemas live in memory)."""
    if running_pid(r) is not None:
        raise KafkaLocalError("stop the registry before resetting its state")
    shutil.rmtree(r.state_dir, ignore_errors=True)
