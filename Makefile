# Two commands matter: `make demo` (set up + run the main job on bundled traffic) and `make test` (set up + every
# test, starting real Kafka and Elasticsearch itself). Everything else is a convenience.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lock demo test test-unit lint browser bench services-up services-down clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

setup: $(STAMP)

# Pin what the venv holds (after a dependency was added to pyproject.toml: make test, then make lock).
# To raise a pin: .venv/bin/pip install -U <package>, make test, make lock. Rewritten only when it changes.
lock: setup
	{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	if cmp -s constraints.txt.new constraints.txt; then rm constraints.txt.new; else mv constraints.txt.new constraints.txt; fi

demo: setup
	$(BIN)/abusewatch demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Headless Chromium renders the HTML report in one test; installed from Debian's packages where we can.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package) for the report rendering test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found and cannot be installed here: its test will be skipped"; fi; }

test: lint browser
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest -m "not integration and not slow"

bench: setup
	$(BIN)/python -m bench

services-up:
	deploy/local/services.sh up

services-down:
	deploy/local/services.sh down

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
