# The two promises of the README: `make demo` runs the platform end to end on embedded defaults,
# `make test` passes the tests. Both install what is missing first (scripts/install.sh).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export TWIN_DATA_DIR ?= $(CURDIR)/.twin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_PROGRESS_BARS := 1
PYTEST_ARGS ?=

.PHONY: install opensearch browser demo test test-e2e lint bench lock down clean

install:
	@bash scripts/install.sh
	@bash scripts/install_report_assets.sh

# Debian's chromium, which the data-quality report test renders the report in (apt-get, as root).
browser:
	@bash scripts/install_chromium.sh

# A real OpenSearch 2.19 node with the k-NN plugin, fetched by Maven coordinates into vendor/.
opensearch:
	@bash scripts/install_opensearch.sh

demo: install
	@$(BIN)/twin demo

# `make test` leaves out the long end-to-end tests (marker e2e); `make test-e2e` runs only those; CI runs both.
test: install opensearch browser lint
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

test-e2e: install opensearch browser
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check --no-cache .

bench: install opensearch
	@$(BIN)/python -m benchmarks.run_all

# Re-resolve requirements.txt into the fully pinned lock (needs the package registry).
lock:
	rm -rf /tmp/twin-lock-venv && python3.11 -m venv /tmp/twin-lock-venv
	DS_BUILD_OPS=0 /tmp/twin-lock-venv/bin/pip install -q "$$(grep -E '^torch==' requirements.txt)"
	DS_BUILD_OPS=0 /tmp/twin-lock-venv/bin/pip install -q -r requirements.txt
	/tmp/twin-lock-venv/bin/pip freeze --exclude-editable > requirements.lock

down:
	@$(BIN)/twin stack down

clean: down
	rm -rf .twin
