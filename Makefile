# Every target works on a fresh clone: it makes the virtualenv, installs the
# project, makes sure a Kafka broker is there (`test` through its fixtures, the
# others through `broker`), then does its job.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
KAFKA_PORT ?= 9092
BOOTSTRAP  ?= 127.0.0.1:$(KAFKA_PORT)

.PHONY: test test-unit demo demo-drift broker broker-stop lint clean docs docs-serve docs-reference docs-check

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

lint: $(STAMP) docs-check
	$(BIN)/ruff check worker tests bench
	$(BIN)/mypy worker

# No `broker` prerequisite: the tests reuse a broker on KAFKA_PORT, or else start a
# throwaway one with empty data (tests/conftest.py).
# TEST_WORKERS: pytest-xdist processes, each taking whole files (--dist loadfile). Most
# integration tests wait on a stream, a broker or a timeout rather than on a core, so two of
# them side by side take little longer than one. TEST_WORKERS=0 runs them one at a time.
# --no-loadscope-reorder hands out files in collection order: the integration files (the
# long ones) first, the many short unit files last, so no process ends on a long file alone.
TEST_WORKERS ?= 2
test: lint
	SCORING_TEST_KAFKA_PORT=$(KAFKA_PORT) $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The unit tests alone: no broker, no tools (the tests that need helm or promtool skip
# without them, except in CI), about a minute on a laptop.
test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

demo: broker
	$(BIN)/scoring-worker demo --bootstrap $(BOOTSTRAP) --workdir demo-out

# The model loop: drift, the monitor's alert, retrain, promotion, recovery (docs/getting-started/drift-demo.md).
demo-drift: broker
	$(BIN)/scoring-worker demo --drift --bootstrap $(BOOTSTRAP) --workdir demo-out

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache site

# -- The docs site (mkdocs.yml, docs/) ----------------------------------------------------
# `docs` builds it into site/ (git-ignored; open site/index.html, it works offline),
# `docs-serve` serves it while you edit, `docs-reference` writes the generated reference pages
# (docs/reference/: settings, CLI help, schemas, Python API) from the code. `docs-check`, part
# of `lint` and so of `make test`, builds it with --strict into a throwaway folder: a broken
# link, a missing page or a missing include fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Port 8008: 8000 and 8001 are the worker's and the monitor's metrics ports.
DOCS_PORT ?= 8008
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

docs-reference: $(STAMP)
	$(BIN)/python -m worker.devtools.reference_docs

docs-check: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$$tmp/site"

# -- Operations surface (deploy/) ---------------------------------------------------------
# promtool and the prometheus server that tests/unit/deploy/test_deploy.py and
# tests/integration/test_prometheus.py run come from Debian's prometheus package, the headless
# Chromium of tests/integration/test_status_page.py (and of the demo's report.png) from
# Debian's chromium package (never a browser download: the network may be closed). Only the
# binaries are wanted: where systemd starts the package's service (:9090), it is stopped
# and disabled again (containers without systemd never start it).
.PHONY: tools lock deploy-lint
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test: tools
lint: deploy-lint

# helm (tests/unit/deploy/test_helm.py lints and renders deploy/helm/) is built from the Go module
# proxy once per version and cached outside the clone, so fresh clones reuse it:
# $(HELM_BIN)/helm. The first build takes a few minutes.
HELM_VERSION ?= v3.22.0
HELM_BIN     ?= $(HOME)/.cache/scoring-worker/helm-$(HELM_VERSION)/bin
HELM          = $(HELM_BIN)/helm

tools: $(HELM)
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
	@if command -v chromium >/dev/null; then \
	  echo "tools: $$(chromium --version 2>/dev/null | head -n 1)"; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "tools: install Chromium (Debian's chromium) for tests/integration/test_status_page.py"; \
	  exit 1; \
	else \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends chromium; \
	fi

# The ldflags are those of helm's own Makefile: its version, and the Kubernetes version that
# `helm template` and `helm lint` assume (from its client-go, v0.X -> 1.X; 1.20 otherwise).
$(HELM):
	@command -v go >/dev/null || { echo "tools: Go is needed to build helm $(HELM_VERSION)"; exit 1; }
	@echo "tools: building helm $(HELM_VERSION) into $(HELM_BIN) (once; a few minutes)"
	set -e; rm -rf $(HELM_BIN).tmp; \
	gomod=$$(go mod download -json helm.sh/helm/v3@$(HELM_VERSION) | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p'); \
	k8s_minor=$$(sed -n 's|^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p' "$$gomod"); \
	test -n "$$k8s_minor"; \
	ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)"; \
	for pkg in pkg/chartutil pkg/lint/rules; do \
	  ldflags="$$ldflags -X helm.sh/helm/v3/$$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$$pkg.k8sVersionMinor=$$k8s_minor"; \
	done; \
	GOBIN=$(HELM_BIN).tmp GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
	  go install -ldflags "$$ldflags" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mkdir -p $(HELM_BIN)
	mv $(HELM_BIN).tmp/helm $(HELM) && rmdir $(HELM_BIN).tmp
	$(HELM) version --short

# deploy/requirements.lock: the runtime dependencies as installed in the venv, pinned.
lock: $(STAMP)
	$(BIN)/python deploy/lock.py > deploy/requirements.lock.tmp
	mv deploy/requirements.lock.tmp deploy/requirements.lock

deploy-lint: $(STAMP)
	@if [ -d deploy ]; then $(BIN)/ruff check deploy; fi
