# Every target works on a fresh clone: it makes the virtualenv, installs the
# project, makes sure the local Kafka broker runs, then does its job.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
KAFKA_PORT ?= 9092
BOOTSTRAP  ?= 127.0.0.1:$(KAFKA_PORT)

.PHONY: test demo broker broker-stop lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

broker: $(STAMP)
	$(BIN)/scoring-worker kafka-local start --port $(KAFKA_PORT)

broker-stop: $(STAMP)
	$(BIN)/scoring-worker kafka-local stop --port $(KAFKA_PORT)

lint: $(STAMP)
	$(BIN)/ruff check worker tests bench
	$(BIN)/mypy worker

test: lint broker
	SCORING_TEST_KAFKA_PORT=$(KAFKA_PORT) $(BIN)/pytest

demo: broker
	$(BIN)/scoring-worker demo --bootstrap $(BOOTSTRAP) --workdir demo-out

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# -- Operations surface (deploy/) ---------------------------------------------------------
# promtool and the prometheus server that tests/unit/test_deploy.py and
# tests/integration/test_prometheus.py run come from Debian's prometheus package. Only the
# binaries are wanted: where systemd starts the package's service (:9090), it is stopped
# and disabled again (containers without systemd never start it).
.PHONY: tools lock deploy-lint
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test: tools
lint: deploy-lint

tools:
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then \
	  echo "tools: $$(promtool --version 2>&1 | head -n 1)"; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "tools: install Prometheus (promtool and prometheus) with your package manager"; \
	  exit 1; \
	else \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends prometheus && \
	  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; \
	  then $(SUDO) systemctl disable --now prometheus; fi; \
	fi

# deploy/requirements.lock: the runtime dependencies as installed in the venv, pinned.
lock: $(STAMP)
	$(BIN)/python deploy/lock.py > deploy/requirements.lock.tmp
	mv deploy/requirements.lock.tmp deploy/requirements.lock

deploy-lint: $(STAMP)
	@if [ -d deploy ]; then $(BIN)/ruff check deploy; fi
