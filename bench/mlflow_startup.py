"""Start-up time and peak RSS of a worker, with and without the mlflow extra.

Each run is a fresh process that does what ``scoring-worker run`` does before it reads
Kafka: import the command line and the stream, load and self-test the model
(``build_context``), then report its peak RSS. Cases, in one run of this script:

- ``baseline``: the code of ``--baseline-ref`` (default main), MLflow not importable;
- ``no extra``: this tree, MLflow not importable (a worker installed without the extra);
- ``extra, bundle``: this tree, MLflow installed, serving a bundle folder;
- ``extra, models:/``: this tree serving ``models:/bench@champion`` from a real
  ``mlflow server`` (the version already in the cache folder: a restart).

    .venv/bin/python bench/mlflow_startup.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import sys, time
t0 = time.perf_counter()
if {block}:
    import importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "mlflow":
                raise ModuleNotFoundError(name)
    sys.meta_path.insert(0, Block())
import worker.cli, worker.stream.app
from worker.config import Settings
from worker.context import build_context
build_context(Settings(model={model!r}, **{extra!r}))
took = time.perf_counter() - t0
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(took, int(peak) / 1024, any(m.split(".")[0] == "mlflow" for m in sys.modules))
"""


def once(code_root: Path, model: str, block: bool, uri: str = "",
         cache: str = "") -> tuple[float, float, bool]:
    extra = {"mlflow_tracking_uri": uri, "mlflow_cache": cache} if uri else {}
    code = CHILD.format(block=block, model=model, extra=extra)
    env = {**os.environ, "PYTHONPATH": str(code_root), "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = subprocess.run([sys.executable, "-c", code], cwd=code_root, env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    took, peak, imported = out.stdout.split()
    return float(took), float(peak), imported == "True"


def baseline_tree(ref: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def registered(uri: str) -> None:
    import mlflow
    from mlflow.models import infer_signature

    from tests.integration.test_mlflow import frame, pipeline

    mlflow.set_tracking_uri(uri)
    pipe, (x, _) = pipeline(1), frame(99, 200)
    with mlflow.start_run():
        mlflow.sklearn.log_model(pipe, name="model", registered_model_name="bench",
                                 signature=infer_signature(x, pipe.predict_proba(x)),
                                 input_example=x.iloc[:40], skops_trusted_types=["numpy.dtype"])
    mlflow.MlflowClient().set_registered_model_alias("bench", "champion", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-ref", default="main")
    a = parser.parse_args()
    # A SIGTERM (a timeout) still runs the finally below, which stops the MLflow server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from tests.integration.mlflow_server import MlflowServer
    from worker.devtools.demo import train_demo

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bundle = str(train_demo(tmp / "bundle", n=20_000))
        (tmp / "base").mkdir()
        base = baseline_tree(a.baseline_ref, tmp / "base")
        server = MlflowServer(tmp)
        server.start()
        try:
            registered(server.uri)
            cache = str(tmp / "cache")
            once(ROOT, "models:/bench@champion", False, server.uri, cache)  # fill the cache
            cases = {"baseline": (base, bundle, True, ""), "no extra": (ROOT, bundle, True, ""),
                     "extra, bundle": (ROOT, bundle, False, ""),
                     "extra, models:/": (ROOT, "models:/bench@champion", False, server.uri)}
            results: dict[str, list[tuple[float, float, bool]]] = {k: [] for k in cases}
            for _ in range(a.runs):  # interleaved, so that a busy moment hits every case
                for name, (root, model, block, uri) in cases.items():
                    results[name].append(once(root, model, block, uri, cache))
        finally:
            server.stop()
    print(f"{'case':<18} {'start-up s (median)':>20} {'peak RSS MiB (median)':>22}  mlflow")
    for name, rows in results.items():
        print(f"{name:<18} {statistics.median(r[0] for r in rows):>20.2f} "
              f"{statistics.median(r[1] for r in rows):>22.1f}  {any(r[2] for r in rows)}")
    print(f"{a.runs} runs each, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
