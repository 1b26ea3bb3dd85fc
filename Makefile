# Sandhive — the two commands that matter: `make up` (run) and `make test` (test). See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR := .run
HOST ?= 127.0.0.1
PORT ?= 3000
DATA_DIR ?= /var/lib/sandhive

.PHONY: dashboard-assets up down test test-unit test-microvm test-cluster lint bench proto system-image system-image-force node-toolchain base-template code-interpreter-template debian-packages venv openapi

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

# Debian 13's criu (and crun) with their libraries, for the container backend's checkpoint/restore
# (Debian 12's CRIU fails on new kernels). Cached beside the system image; see images/node_toolchain.py.
node-toolchain: venv
	$(BIN)/python -m sandhive.images.node_toolchain build

base-template: system-image
	$(BIN)/sandhive template build-builtin base --data-dir $(DATA_DIR)

# Optional, not part of `up`: the built-in `code-interpreter-v1` (e2b_code_interpreter's default), ~2 min from
# PyPI, seconds from the tree cache. Without it the first create naming it builds it (docs/code-interpreter.md).
code-interpreter-template: base-template
	$(BIN)/sandhive template build-builtin code-interpreter --data-dir $(DATA_DIR)

# The dashboard's browser libraries (htmx, xterm.js, uPlot) from npm, exactly as package-lock.json pins them,
# served by the API from node_modules (no CDN). npm's download cache sits beside the other build caches, and
# the host's CA bundle is trusted as in template builds. Reinstalled only when the lockfile changes.
DASHBOARD_ASSETS := src/sandhive/api/dashboard/assets
dashboard-assets: $(DASHBOARD_ASSETS)/node_modules/.installed

$(DASHBOARD_ASSETS)/node_modules/.installed: $(DASHBOARD_ASSETS)/package.json $(DASHBOARD_ASSETS)/package-lock.json
	cd $(DASHBOARD_ASSETS) && { test ! -r /etc/ssl/certs/ca-certificates.crt || export NPM_CONFIG_CAFILE=/etc/ssl/certs/ca-certificates.crt; } && \
	  npm ci --no-audit --no-fund --no-update-notifier --cache "$${SANDHIVE_CACHE_DIR:-/var/cache/sandhive}/npm"
	@touch $@

# Start the server in the background (as root: sandboxes need namespaces, cgroups and mounts).
up: base-template node-toolchain dashboard-assets
	@mkdir -p $(RUN_DIR)
	@if [ -f $(RUN_DIR)/server.pid ] && kill -0 $$(cat $(RUN_DIR)/server.pid) 2>/dev/null; then \
	  echo "sandhive already runs (pid $$(cat $(RUN_DIR)/server.pid))"; \
	else \
	  setsid $(BIN)/sandhive serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) \
	    >$(RUN_DIR)/server.log 2>&1 & echo $$! > $(RUN_DIR)/server.pid; \
	  for i in $$(seq 1 120); do curl -sf http://$(HOST):$(PORT)/health >/dev/null && break; sleep 0.5; done; \
	  curl -sf http://$(HOST):$(PORT)/health >/dev/null || { echo "sandhive did not start:"; tail -20 $(RUN_DIR)/server.log; exit 1; }; \
	fi
	@key=$$($(BIN)/sandhive keys create --quiet --data-dir $(DATA_DIR)); \
	echo "sandhive runs on http://$(HOST):$(PORT) (pid $$(cat $(RUN_DIR)/server.pid), log $(RUN_DIR)/server.log)"; \
	echo "API key: $$key"; \
	echo; \
	echo "export E2B_API_URL=http://$(HOST):$(PORT) E2B_SANDBOX_URL=http://$(HOST):$(PORT) E2B_API_KEY=$$key"; \
	echo "$(BIN)/python -c \"from e2b import Sandbox; s = Sandbox.create(); print(s.commands.run('echo Hello from Sandhive').stdout); s.kill()\""

down:
	@if [ -f $(RUN_DIR)/server.pid ]; then kill $$(cat $(RUN_DIR)/server.pid) 2>/dev/null || true; rm -f $(RUN_DIR)/server.pid; echo "sandhive stopped (its sandboxes keep running; a restart adopts them and ends the overdue)"; fi

# The integration suites (the rest of tests/, as root) in three groups run side by side, each a pytest with its own
# servers (scripts/side-by-side.sh says why that is safe). Every directory of tests/ is in one group, or in the unit
# tier, `test-microvm` or `test-cluster` (tests/unit/test_test_groups.py holds this).
# Balanced by the time each took side by side on 2 cores: 27 to 36 min each over four runs, the three ending within
# a minute or two of each other.
GROUP_API := tests/api tests/conformance tests/mcp tests/dashboard tests/sysimage tests/node
GROUP_HOSTILE := tests/hostile tests/persistence
GROUP_SDK := tests/sdk tests/cli tests/proxy tests/envd tests/code_interpreter tests/templates tests/builds
PYTEST_GROUP := $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

# In order, each step only if the one before passed: lint, types (0 errors), the unit tier (no root, no server,
# under a minute; its summary is printed), then the integration groups.
test: venv dashboard-assets
	$(BIN)/ruff check src tests bench
	@echo "== types (mypy)"
	$(BIN)/mypy
	@echo "== unit tier (no root, no server)"
	$(BIN)/python -m pytest -q tests/unit
	@echo "== integration suites, three groups side by side"
	scripts/side-by-side.sh \
	  api '$(PYTEST_GROUP) $(GROUP_API)' \
	  hostile '$(PYTEST_GROUP) $(GROUP_HOSTILE)' \
	  sdk '$(PYTEST_GROUP) $(GROUP_SDK)'

# The unit tier alone: fakes and pure functions, a few seconds (tests/unit).
test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

# The microvm suite: real QEMU guests (TCG emulation where KVM does not boot them; a few minutes).
test-microvm: venv
	$(BIN)/python -m pytest -q -m microvm tests/microvm

# Many hosts on one machine: PostgreSQL, three `sandhive node`s in network namespaces, two control planes (tests/cluster).
test-cluster: venv
	$(BIN)/python -m pytest -q -m cluster tests/cluster

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# Issue 6's table: sandboxes per backend through a live server, next to raw runtime baselines (as root; minutes).
# The older single-purpose benches stay runnable: python -m bench.envd_bench | bench.proxy_bench | bench.sandbox_bench
# The sandbox table (create, exec, files, concurrency, memory, admission), then template builds and microVMs,
# persistence, the code interpreter (issue 15: run_code through the released client against host ipykernel), and
# domain rules through the egress filter vs plain NAT (issue 16), and density: 200 idle sandboxes on one host (issue 17);
# metrics sampling and the dashboard's sandbox list in Chromium (issue 18).
bench: venv dashboard-assets
	$(BIN)/python -m bench
	$(BIN)/python -m bench.template_bench
	$(BIN)/python -m bench.microvm_bench
	$(BIN)/python -m bench.pause_bench
	$(BIN)/python -m bench.gvisor_pause_bench
	$(BIN)/python -m bench.fork_bench
	$(BIN)/python -m bench.miss_restore_bench
	$(BIN)/python -m bench.microvm_persistence_bench
	$(BIN)/python -m bench.code_interpreter_bench
	$(BIN)/python -m bench.egress_filter_bench
	$(BIN)/python -m bench.density_bench
	$(BIN)/python -m bench.metrics_sampling_bench
	$(BIN)/python -m bench.audit_bench
	$(BIN)/python -m bench.dashboard_bench
	$(BIN)/python -m bench.cluster_bench

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
