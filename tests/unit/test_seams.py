"""Each seam takes a second implementation by adding one module and registering it:
a toy decoder, a toy model runtime (tests/unit/toys/). The toy sink runs against the
real broker in tests/integration/test_seams.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

import worker
from tests.unit.helpers import binary_bundle, event
from tests.unit.toys import kv_decoder, linear_runtime
from worker.core import decoders
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.errors import ModelLoadError, Rejection
from worker.model import runtimes


def test_a_registered_decoder_scores_like_json(tmp_path: Path) -> None:
    assert kv_decoder.KvDecoder is type(decoders.get("kv"))
    bundle = binary_bundle(tmp_path / "m")
    events = [event(i) for i in range(5)]
    kv = [";".join(f"{k}={v}" for k, v in e.items() if k != "ts").encode() for e in events]
    by_kv = score_values([*kv, b"oops"], ScoringContext(bundle, decoder=decoders.get("kv")), 1)
    by_json = score_values([orjson.dumps(e) for e in events], ScoringContext(bundle), 1)
    assert [o.record["score"] for o in by_kv[:5] if isinstance(o, Prediction)] == [
        o.record["score"] for o in by_json if isinstance(o, Prediction)
    ]
    assert isinstance(by_kv[5], Rejection) and by_kv[5].message == "expected key=value pairs"


def test_unknown_decoder_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown input format 'xml'.*avro.*json"):
        decoders.get("xml")


def test_a_registered_runtime_writes_loads_and_scores(tmp_path: Path) -> None:
    model = linear_runtime.LinearModel([1.0, -2.0, 0.5], 0.25)
    sample = np.random.default_rng(0).normal(size=(8, 3))
    folder = worker.write_bundle(tmp_path / "lin", model, name="toy", version="1",
                                 task="binary", features=["a", "b", "c"], sample=sample,
                                 runtime="toy-linear")
    manifest = orjson.loads((folder / "model.json").read_bytes())
    assert (manifest["runtime"], manifest["artifact"]) == ("toy-linear", "model.lin")
    bundle = worker.load_bundle(folder)
    assert "toy-linear" in runtimes.kinds()
    outcomes = worker.score_records(bundle, [event(i) for i in range(4)], now_ms=5)
    x = np.array([[e["a"], e["b"], e["c"]] for e in (event(i) for i in range(4))])
    expected = model.proba(x)[:, 1]
    got = [o.record["score"] for o in outcomes if isinstance(o, Prediction)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_a_runtime_refuses_an_artifact_it_does_not_read(tmp_path: Path) -> None:
    sample = np.zeros((4, 2))
    with pytest.raises(ValueError):  # refused when written: it cannot score its own sample
        worker.write_bundle(tmp_path / "bad", linear_runtime.LinearModel([1.0], 0.0),
                            name="toy", version="1", task="binary", features=["a", "b"],
                            sample=sample, runtime="toy-linear")
    folder = worker.write_bundle(tmp_path / "lin", linear_runtime.LinearModel([1.0, 2.0], 0.0),
                                 name="toy", version="1", task="binary", features=["a", "b"],
                                 sample=sample, runtime="toy-linear")
    manifest = orjson.loads((folder / "model.json").read_bytes())
    manifest["features"] = ["a"]
    (folder / "model.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(ModelLoadError, match="2 weights for 1 features"):
        worker.load_bundle(folder)
    manifest = orjson.loads((folder / "model.json").read_bytes())
    manifest["runtime"] = "onnx-someday"
    (folder / "model.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(ModelLoadError, match="unknown runtime 'onnx-someday'"):
        worker.load_bundle(folder)


def test_every_public_name_resolves() -> None:
    assert sorted(worker.__all__) == sorted(worker._EXPORTS)
    for name in worker.__all__:
        assert getattr(worker, name) is not None
