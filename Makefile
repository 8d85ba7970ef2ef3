# gorn's front door. `make run` serves the example app; `make test` runs every test.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
VENV312 := .venv312
PY312   := $(VENV312)/bin/python
BIN   := bin/gorn
GO    ?= go

.PHONY: run test build bytecode native asan wheel venv venv312 lint gotest pytest bench clean

build: bytecode native
	$(GO) build -o $(BIN) ./cmd/gorn

## bytecode: compile the worker runtime for each CPython 3.10-3.13 found, for go build to
## embed (worker/bytecode/README.md).
bytecode:
	@bash worker/bytecode/compile.sh

## wheel: dist/gorn-VERSION-py3-none-manylinux_2_17_ARCH.whl for each of WHEEL_ARCHES: what
## `make build` embeds, with the native accelerator built for ARCH by `zig cc` (the ziglang
## wheel) against glibc 2.17, from the Python headers of $(PY)'s base interpreter (abi3;
## Debian's multiarch headers cannot serve a cross build, a python.org/pyenv build's can),
## overlaid on the embedded one; the binary cross-compiled with CGO_ENABLED=0 (static, no
## glibc symbol of its own); packed by hatchling through `python -m build`
## (python/pyproject.toml), which sets the platform tag.
WHEEL_ARCHES ?= x86_64 aarch64
DIST         ?= dist
WHEEL_BUILD  ?= build/wheel
NATIVE_SO    := worker/pyworker/gorn_worker/lib/gorn_native.abi3.so
wheel: venv bytecode
	rm -rf $(WHEEL_BUILD) && mkdir -p $(DIST)
	for arch in $(WHEEL_ARCHES); do \
	  case $$arch in x86_64) goarch=amd64 ;; aarch64) goarch=arm64 ;; \
	    *) echo "make wheel: unknown architecture $$arch (x86_64, aarch64)"; exit 2 ;; esac; \
	  out=$(abspath $(WHEEL_BUILD))/$$arch && mkdir -p $$out || exit 1; \
	  CC="$(abspath $(PY)) -m ziglang cc -target $$arch-linux-gnu.2.17" PYTHON=$(abspath $(PY)) \
	    NATIVE_OUT=$$out/gorn_native.abi3.so NATIVE_REQUIRED=1 bash worker/native/build.sh || exit 1; \
	  printf '{"Replace":{"%s":"%s"}}' $(abspath $(NATIVE_SO)) $$out/gorn_native.abi3.so >$$out/overlay.json; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$goarch $(GO) build -overlay $$out/overlay.json -trimpath \
	    -ldflags "-s -w" -o $$out/gorn ./cmd/gorn || exit 1; \
	  rm -f $(DIST)/gorn-*-manylinux_2_17_$$arch.*.whl; \
	  SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || date +%s) \
	  GORN_WHEEL_BINARY=$$out/gorn GORN_WHEEL_PLATFORM=manylinux_2_17_$$arch.manylinux2014_$$arch \
	    $(abspath $(PY)) -m build --wheel --no-isolation --outdir $(abspath $(DIST)) python || exit 1; \
	done

## native: the worker's C accelerator (worker/native/build.sh), embedded by the next go build.
## CC, PYTHON, PYTHON_INCLUDE and NATIVE_CFLAGS are passed through; without a compiler or
## Python headers it only says so (NATIVE_REQUIRED=1 fails instead) and workers run the
## pure-Python request path.
native:
	bash worker/native/build.sh

## asan: fuzz the native parser under AddressSanitizer for ASAN_SECONDS (default 20).
asan: venv
	bash worker/native/asan.sh $(abspath $(PY))

$(PY): examples/flask/requirements.txt worker/pyworker/requirements-test.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r examples/flask/requirements.txt -r worker/pyworker/requirements-test.txt
	touch $(PY)

venv: $(PY)

## venv312: the CPython >= 3.12 venv of the real-app tests (Django 6 needs 3.12, httpbin's
## greenlet pin cannot share .venv with gevent): pyenv's 3.12, else a python3.12+ on $PATH.
## Without one the tests skip, or fail under GORN_TEST_STRICT=1 (.ci/run builds it first).
$(PY312): test/fixtures/requirements-py312.txt
	base=$$(bash test/fixtures/find-python312.sh) && $$base -m venv $(VENV312)
	$(PY312) -m pip install -q -r test/fixtures/requirements-py312.txt
	touch $(PY312)

venv312: $(PY312)

## run: serve the example Flask app on http://127.0.0.1:8000 with workers sized to this machine.
run: build venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN) --chdir examples/flask --access-logfile - --metrics-bind 127.0.0.1:9191 app:app

## test: linters, Go unit and integration tests (race detector), Python runtime tests.
## GORN_TEST_STRICT=1 (set by .ci/run) fails the tests whose prerequisites are missing.
test: lint gotest pytest asan

## lint: gofmt, go vet and staticcheck (pinned in go.mod's tool block); ruff and mypy (pinned
## in requirements-test.txt, configured in worker/pyworker/pyproject.toml and, for the
## wheel's launcher, python/pyproject.toml).
lint: venv
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	cd worker/pyworker && $(abspath $(VENV))/bin/ruff check --no-cache .
	cd worker/pyworker && $(abspath $(VENV))/bin/mypy
	cd python && $(abspath $(VENV))/bin/ruff check --no-cache . && $(abspath $(VENV))/bin/mypy

gotest: venv bytecode native
	GORN_TEST_PYTHON=$(abspath $(PY)) GORN_TEST_PYTHON312=$(abspath $(PY312)) $(GO) test -race -count=1 -timeout 20m ./...

pytest: venv native
	cd worker/pyworker && $(abspath $(PY)) -m pytest -q -p no:cacheprovider tests

bench: build venv
	bash bench/bench.sh

clean:
	rm -rf bin build dist $(VENV) $(VENV312)
