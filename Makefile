# tensorgate: `make run` brings the local stack up on the example models; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
UP_ARGS ?=

.PHONY: run test install-dev install-server system-deps proto lint wheel-check bench clean docs-settings lock k8s-generate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# stamps: reinstall only when pyproject.toml or the lock changes. The images' lock constrains the
# server's packages here too, so the tests run the versions that the images ship.
LOCK := k8s/requirements.lock
$(VENV)/.server: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e '.[server]'
	touch $@

$(VENV)/.dev: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev]'
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

## k8s/requirements.lock: every package of tensorgate[server], pinned (uv, network: PyPI). Run it
## after changing dependencies in pyproject.toml; tests/unit/test_k8s_image.py fails until then.
lock: install-dev
	$(BIN)/python k8s/lock.py

## the generated files of k8s/: the Envoy bootstrap, and the PrometheusRule from alerts.yaml
## (RUNBOOK_BASE=<url of docs/runbook.md as you publish it> sets the base of every runbook_url)
RUNBOOK_BASE ?=
k8s-generate: install-dev
	$(BIN)/python k8s/envoy/render.py
	$(BIN)/python k8s/components/prometheus-operator/render.py $(if $(RUNBOOK_BASE),--runbook-base $(RUNBOOK_BASE))

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
