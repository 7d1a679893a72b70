"""Every command's declared settings, for whatever lists them: a settings reference, a
deployment schema, a check that the two agree.

``command_settings("monitor")`` gives the monitor's settings in ``--help`` order, each a
``Spec``: ``name``, ``value_type`` (int, float, str or bool, as written in TOML or an
environment), ``kind`` (the parsed type: an enum for choices), ``default`` (None when
``computed`` at start, a host name), ``allowed`` (range or choices in words; the bounds
themselves are ``rule.ge``/``rule.gt``/``rule.le``, the choices ``rule.choices``), ``doc``,
``flag`` and ``env``. Every command also reads ``--config FILE`` and (but score-file)
librdkafka properties (``--kafka``, ``SCORING_KAFKA``, a ``[kafka]`` table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from worker.config import Settings
from worker.monitor_app.settings import MonitorSettings
from worker.retrain.settings import RetrainSettings
from worker.settings_rules import Spec, specs

#: The settings class of each command that has settings (score-file: the worker's batch ones).
COMMANDS: Final[Mapping[str, type[Any]]] = {
    "run": Settings,
    "score-file": Settings,
    "monitor": MonitorSettings,
    "retrain": RetrainSettings,
}


def command_settings(command: str) -> tuple[Spec, ...]:
    """The declared settings of ``command`` (a key of ``COMMANDS``), in ``--help`` order."""
    batch_only = command == "score-file"
    return tuple(s for s in specs(COMMANDS[command]).values() if s.rule.batch or not batch_only)
