"""The encoder seam: one encoder per output format, a prediction record -> its message value.

An encoder is a callable: the hot path encodes thousands of predictions a batch, so the
JSON one is orjson's own function with no Python call in between. An encoder is pure:
what it needs from outside (the Avro encoder's schema id, which the registry gives when
the schema is registered) is passed to its factory by the shell (worker/stream/
output_format.py, which picks one by ``--output-format``). Adding a format is adding a
module beside these, and its case there.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.core.records import PredictionRecord

#: A prediction record -> the bytes of its message value.
Encoder = Callable[[PredictionRecord], bytes]
