# The two set-up commands of the README: `make serve` runs the service, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install serve test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
	@if [ -f tests/node/package.json ]; then cd tests/node && npm ci --no-audit --no-fund --silent; fi

serve: $(VENV)/.installed
	$(VENV)/bin/webpubsub serve $(ARGS)

test: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

bench:  ## webpubsub vs Socket.IO 4.8, and MQTT vs Mosquitto, on this machine, about 7 minutes (docs/benchmarks.md)
	python3 -m bench $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) tests/node/node_modules
