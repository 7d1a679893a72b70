"""scoring-worker: streaming real-time scoring of Kafka events with scikit-learn models."""

__version__ = "0.1.0"
