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
