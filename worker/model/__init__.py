"""Model bundles on disk (manifest, artifact), the runtimes that score them, and the store.

``write_bundle`` (worker/model/writer.py) turns a fitted estimator into a bundle;
``load_bundle`` reads one back; ``load_checked`` (worker/model/checked.py) also runs
its self-test, as the worker does.
"""

from worker.model.bundle import MANIFEST_NAME, ModelBundle, load_bundle, sha256_file
from worker.model.writer import write_bundle

__all__ = ["MANIFEST_NAME", "ModelBundle", "load_bundle", "sha256_file", "write_bundle"]
