"""Predictions as JSON objects (schemas/prediction.schema.json): the default output format,
byte for byte what the worker always wrote."""

from __future__ import annotations

from typing import Final

from worker.core.encoders import Encoder
from worker.core.records import encode as _orjson_dumps

#: orjson's own function: no Python call per prediction.
encode: Final[Encoder] = _orjson_dumps
