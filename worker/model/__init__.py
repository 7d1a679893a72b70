"""Model bundles on disk (manifest, artifact), the runtimes that score them, and the store."""

from worker.model.bundle import MANIFEST_NAME, ModelBundle, load_bundle, sha256_file, write_bundle

__all__ = ["MANIFEST_NAME", "ModelBundle", "load_bundle", "sha256_file", "write_bundle"]
