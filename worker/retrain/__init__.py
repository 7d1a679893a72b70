"""Retraining: ``scoring-worker retrain``, a bounded batch job that fits a fresh clone of the
serving model on a time range of labeled events, compares it with the champion on the
newest rows, and promotes it when the policy says it is better.

Pure parts (dataset, threshold, policy, evaluate, table, decision) take plain values;
the shell (data, job, act) reads Kafka, writes the store and publishes.
"""
