# Sandhive — the two commands that matter: `make up` (run) and `make test` (test). See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR := .run
ENVD_PORT ?= 49983

.PHONY: up down test lint bench proto system-image system-image-force debian-packages venv openapi

debian-packages:
	@scripts/install-debian-packages.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

venv: debian-packages $(STAMP)

# envd + its own Python runtime, mounted read-only at /.sandhive in every sandbox. The Debian layer is
# cached under $$SANDHIVE_CACHE_DIR (default /var/cache/sandhive); a source change rebuilds only the
# sandhive layer (seconds).
system-image: venv
	$(BIN)/python -m sandhive.images.system_image build

system-image-force: venv
	$(BIN)/python -m sandhive.images.system_image build --force

# Until the control plane lands, `make up` runs envd on this host, where the e2b SDK's debug mode finds it.
up: system-image
	@mkdir -p $(RUN_DIR)
	@if [ -f $(RUN_DIR)/envd.pid ] && kill -0 $$(cat $(RUN_DIR)/envd.pid) 2>/dev/null; then \
	  echo "envd already runs (pid $$(cat $(RUN_DIR)/envd.pid))"; \
	else \
	  setsid $(BIN)/python -m sandhive.envd --host 127.0.0.1 --port $(ENVD_PORT) >$(RUN_DIR)/envd.log 2>&1 & \
	  echo $$! > $(RUN_DIR)/envd.pid; sleep 1; \
	  echo "envd runs on http://127.0.0.1:$(ENVD_PORT) (pid $$(cat $(RUN_DIR)/envd.pid), log $(RUN_DIR)/envd.log)"; \
	fi
	@echo "Try: E2B_DEBUG=true $(BIN)/python -c \"from e2b import Sandbox; print(Sandbox.create().commands.run('echo hi').stdout)\""

down:
	@if [ -f $(RUN_DIR)/envd.pid ]; then kill $$(cat $(RUN_DIR)/envd.pid) 2>/dev/null || true; rm -f $(RUN_DIR)/envd.pid; echo "envd stopped"; fi

test: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests bench

bench: venv
	$(BIN)/python -m bench.envd_bench

# Regenerate src/sandhive/rpc from proto/ (needs protoc: Debian's protobuf-compiler).
proto: venv
	$(BIN)/pip install -q -e '.[codegen]'
	rm -rf src/sandhive/rpc/process src/sandhive/rpc/filesystem
	protoc -I proto -I /usr/include --plugin=protoc-gen-py=$(BIN)/protoc-gen-py \
	  --plugin=protoc-gen-connectrpc=$(BIN)/protoc-gen-connectrpc \
	  --py_out=src/sandhive/rpc --connectrpc_out=src/sandhive/rpc \
	  proto/process/process.proto proto/filesystem/filesystem.proto

# Rewrite docs/openapi.json from the API's routes (tests/api/test_openapi.py fails while it is stale).
openapi: venv
	$(BIN)/sandhive openapi docs/openapi.json
