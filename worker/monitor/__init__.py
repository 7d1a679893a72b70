"""The pure core of the model monitor: label join, windows, aggregates, alerts, records.

Nothing here touches Kafka, faust, the clock or the environment: time is always
passed in as epoch milliseconds, and every state is a small JSON value with a
``to_dict()``/``from_dict()`` round trip, so that a streaming app can keep it in
tables backed by changelog topics.
"""
