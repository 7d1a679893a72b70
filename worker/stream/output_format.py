"""The predictions' format (``--output-format``): the encoder of each prediction topic.

JSON needs nothing. Avro registers schemas/prediction.avsc under ``<topic>-value`` in the
schema registry at start (or finds it there: registering the same schema again gives
its id), then writes every prediction in the Confluent wire format with that id, so that
any consumer's usual deserializer reads it. A registry that does not answer at start is
asked again (0.2 s, doubling up to ``schema_registry_backoff_max_s``) until
``start_timeout_s``; one that refuses the schema (an incompatible schema already under
the subject, with a compatibility rule) stops the start with that reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from worker.config import Settings
from worker.core.decoders.wire import SchemaType
from worker.core.encoders import Encoder
from worker.core.encoders.avro import SCHEMA, AvroEncoder
from worker.core.encoders.json import encode as encode_json
from worker.errors import ConfigError, ScoringError
from worker.wire_settings import OutputFormat, require_registry

log = logging.getLogger(__name__)


def subject(topic: str) -> str:
    """The subject of a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


def build_encoder(s: Settings, sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> Encoder:
    """The encoder of the predictions (main and shadow). Avro: the schema is registered under
    the output topic's subject and the shadow topic's, and written with the output
    subject's id (a registry gives the same schema the same id, and a reader needs only
    the id; a shadow model set later by a control record needs no registration then)."""
    if s.output_format is OutputFormat.JSON:
        return encode_json
    require_registry("--output-format", s.output_format, s.schema_registry)
    try:
        from worker.kafka_io.registry import RegistryUnavailable, SchemaSource, connection_of
    except ImportError as exc:
        raise ConfigError(f"--output-format {s.output_format} needs the registry extra: pip "
                          f"install 'scoring-worker[registry]' ({exc})") from None
    source = SchemaSource(connection_of(s))
    deadline, delay = clock() + s.start_timeout_s, 0.0
    ids: dict[str, int] = {}
    for topic in (s.output_topic, s.shadow_topic):
        while topic not in ids:
            try:
                ids[topic] = source.register(subject(topic), SchemaType.AVRO, SCHEMA)
            except RegistryUnavailable as exc:
                if clock() >= deadline:
                    raise ScoringError(f"cannot register the prediction schema: {exc} (for "
                                       f"{s.start_timeout_s:g}s, start_timeout_s)") from None
                if not delay:
                    log.error("%s; asking again until start_timeout_s", exc)
                delay = min(max(2 * delay, 0.2), s.schema_registry_backoff_max_s)
                sleep(delay)
        log.info("predictions to %s as Avro in the wire format: subject %s, schema id %d "
                 "(%s)", topic, subject(topic), ids[topic], s.schema_registry)
    return AvroEncoder(ids[s.output_topic])
