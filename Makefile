# tensorgate: `make run` brings the local stack up on the example models; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
UP_ARGS ?=

.PHONY: run test install-dev install-server system-deps proto lint wheel-check bench clean docs-settings

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# stamps: reinstall only when pyproject.toml changes
$(VENV)/.server: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[server]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.server

install-server: $(VENV)/.server
install-dev: $(VENV)/.dev

## Debian packages the tests use: promtool and prometheus (alert rules and the monitoring e2e test)
system-deps:
	@command -v promtool >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends prometheus; }

## Ctrl-C drains and stops (a second one kills at once); UP_ARGS adds flags of `tensorgate up`
run: install-server
	$(BIN)/tensorgate up --model-repository examples/models --port $(PORT) $(UP_ARGS)

test: install-dev system-deps
	$(BIN)/python -m pytest -q
	$(MAKE) wheel-check

## the generated gRPC stubs (committed; tests/unit/test_proto_stubs.py fails when they are stale)
proto: install-dev
	$(BIN)/python -m tensorgate.proto.generate

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## builds the wheel, installs it alone (the light client) and runs its `tensorgate` against a real server
wheel-check: install-dev
	rm -rf build/wheel-check dist
	$(BIN)/python -m build --wheel --outdir dist -q . >/dev/null
	$(PYTHON) -m venv build/wheel-check
	build/wheel-check/bin/pip install -q dist/tensorgate-*.whl
	cd /tmp && $(CURDIR)/build/wheel-check/bin/python -c "import importlib.util, tensorgate.client, tensorgate.proto.inference_pb2_grpc; assert importlib.util.find_spec('onnxruntime') is None; print('wheel-check: client imports from the wheel without onnxruntime')"
	$(BIN)/python -m tests.support.wheel_check $(CURDIR)/build/wheel-check/bin

clean:
	rm -rf build dist .pytest_cache

## docs/settings.md, generated from server/settings.py (tests/unit/test_settings.py fails when stale)
docs-settings: install-dev
	$(BIN)/python -c 'from tensorgate.server.flags import settings_markdown; open("docs/settings.md", "w").write(settings_markdown())'
