# syntax=docker/dockerfile:1
# scoring-worker: one image for every role (run, monitor, train-demo, produce-demo, ...).
#   docker build -t scoring-worker .
#   docker run --rm scoring-worker run --help
# Runtime dependencies are pinned in deploy/requirements.lock (`make lock`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the project's wheel and a virtualenv with the pinned dependencies -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY deploy/requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-deps -r /tmp/requirements.lock
# The project itself, built with a pinned setuptools outside the runtime virtualenv.
RUN python -m venv /opt/build && /opt/build/bin/pip install setuptools==84.2.1
COPY pyproject.toml README.md /src/
COPY worker /src/worker
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
    && /opt/venv/bin/pip check

# -- runtime --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 scoring \
    && useradd --system --uid 10001 --gid scoring --home-dir /app --shell /usr/sbin/nologin scoring \
    && mkdir -p /app /models \
    && chown scoring:scoring /app /models
# (/models belongs to the user: a fresh named volume mounted there is writable by train-demo.)
COPY --from=build /opt/venv /opt/venv
COPY schemas /app/schemas
WORKDIR /app
USER 10001:10001
# 8000: the worker's /metrics, /healthz, /readyz; 8001: the monitor's.
EXPOSE 8000 8001
ENTRYPOINT ["scoring-worker"]
CMD ["run"]
