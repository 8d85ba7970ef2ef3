# gorn's front door. `make run` serves the example app; `make test` runs every test.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BIN   := bin/gorn
GO    ?= go

.PHONY: run test build bytecode venv lint gotest pytest bench clean

build: bytecode
	$(GO) build -o $(BIN) ./cmd/gorn

## bytecode: compile the worker runtime for each CPython 3.10-3.13 found, for go build to
## embed (worker/bytecode/README.md).
bytecode:
	@bash worker/bytecode/compile.sh

$(PY): examples/flask/requirements.txt worker/pyworker/requirements-test.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r examples/flask/requirements.txt -r worker/pyworker/requirements-test.txt
	touch $(PY)

venv: $(PY)

## run: serve the example Flask app on http://127.0.0.1:8000 with workers sized to this machine.
run: build venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN) --chdir examples/flask --access-logfile - --metrics-bind 127.0.0.1:9191 app:app

## test: linters, Go unit and integration tests (race detector), Python runtime tests.
## GORN_TEST_STRICT=1 (set by .ci/run) fails the tests whose prerequisites are missing.
test: lint gotest pytest

## lint: gofmt, go vet and staticcheck (pinned in go.mod's tool block); ruff and mypy (pinned
## in requirements-test.txt, configured in worker/pyworker/pyproject.toml).
lint: venv
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	cd worker/pyworker && $(abspath $(VENV))/bin/ruff check --no-cache .
	cd worker/pyworker && $(abspath $(VENV))/bin/mypy

gotest: venv bytecode
	GORN_TEST_PYTHON=$(abspath $(PY)) $(GO) test -race -count=1 -timeout 20m ./...

pytest: venv
	cd worker/pyworker && $(abspath $(PY)) -m pytest -q -p no:cacheprovider tests

bench: build venv
	bash bench/bench.sh

clean:
	rm -rf bin $(VENV)
