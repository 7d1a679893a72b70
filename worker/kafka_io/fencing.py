"""A static group member whose instance id was fenced: rejoin, unless it keeps happening.

The group coordinator fences a static member (FENCED_INSTANCE_ID, fatal for librdkafka's
consumer) when another JoinGroup comes with its group.instance.id. That is either a second
live process with the same id, which must not run, or this very process: librdkafka
rejoins under a new member id when its own session timed out during a broker outage, and
its requests under the old one are then fenced. A fresh consumer with the same id takes
the membership back, so one fence is answered by rejoining; a second live process would
fence it again within seconds (each rejoin fences the other), so a few fences close
together end the process, with one line naming the id and what to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from confluent_kafka import KafkaError

from worker.errors import KafkaFatalError

log = logging.getLogger(__name__)
#: Fenced this many times within FENCE_WINDOW_S: another live process has this id.
FENCES_BEFORE_EXIT: Final = 3
FENCE_WINDOW_S: Final = 120.0


def is_fenced(err: KafkaError, conf: Mapping[str, Any]) -> bool:
    """Whether ``err`` says this static member's instance id was taken."""
    return bool(conf.get("group.instance.id")) and (
        err.code() == KafkaError.FENCED_INSTANCE_ID or "group.instance.id" in err.str())


def fatal_line(what: str, err: KafkaError, conf: Mapping[str, Any], fences: int = 1) -> str:
    """The one line a fatal error ends the process with; a fenced static member says
    which id another process took and what to do."""
    if is_fenced(err, conf):
        again = f" ({fences} times within {FENCE_WINDOW_S:.0f}s)" if fences > 1 else ""
        return (f"{what}: another process joined group {conf.get('group.id')!r} with this "
                f"one's instance id {conf['group.instance.id']!r} (its group.instance.id) "
                f"and took over its partitions{again}; give each running process its own "
                "--instance-id (the default is the host name)")
    return f"{what}: {err.str()}"


#: The line that ends the process: (the error, how many fences) -> text.
Describe = Callable[[KafkaError, int], str]


class Fences:
    """When this process's id (its group.instance.id, or its transactional.id: a broker
    that aborted a transaction after its timeout during an outage fences the producer's
    epoch too) was fenced."""

    def __init__(self, ident: str, describe: Describe,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ident, self._describe, self._clock = ident, describe, clock
        self._at: list[float] = []

    @classmethod
    def of_member(cls, what: str, conf: Mapping[str, Any],
                  clock: Callable[[], float] = time.monotonic) -> Fences:
        return cls(str(conf.get("group.instance.id")),
                   lambda err, n: fatal_line(what, err, conf, n), clock)

    def record(self, err: KafkaError) -> None:
        """Note a fence: a warning (the caller rejoins or starts afresh), or
        KafkaFatalError when it has happened FENCES_BEFORE_EXIT times within
        FENCE_WINDOW_S."""
        now = self._clock()
        self._at = [t for t in self._at if now - t < FENCE_WINDOW_S] + [now]
        if len(self._at) >= FENCES_BEFORE_EXIT:
            raise KafkaFatalError(self._describe(err, len(self._at)))
        log.warning("id %r fenced (%s); starting afresh under it. A broker outage longer "
                    "than the session or transaction timeout does this once; if it keeps "
                    "happening, another process runs with this id", self._ident,
                    err.str())
