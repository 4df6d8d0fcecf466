# pitstop — `make demo` shows it, `make test` proves it.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
WORK    := .work
CARGO   ?= cargo
ROOT    := $(abspath .)
export MOTO_SERVER := $(ROOT)/$(VENV)/bin/moto_server

.PHONY: help build test test-rust test-chart crds lint fmt deps venv haproxy lua prometheus demo demo-naive demo-asg bench bench-scale chaos e2e-kube clean-work

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## Build pitstop and the sandbox tools
	$(CARGO) build --workspace --bins

venv: $(VENV)/.installed ## Python tools for the tests: moto_server, the Helm engine, schema validators
$(VENV)/.installed: requirements-test.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

haproxy: ## Install HAProxy (Debian package) if missing
	@command -v haproxy >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; }

lua: ## Install Lua 5.1 (Debian package) if missing: the tests run the Argo CD health check with it
	@command -v lua5.1 >/dev/null || { apt-get update -qq && apt-get install -y -qq lua5.1 >/dev/null; }

prometheus: ## Install Prometheus (Debian package) if missing: the alert gate's tests run a real server
	@command -v prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

deps: venv haproxy lua prometheus

test: deps test-rust test-chart ## Everything CI runs

test-rust:
	# The e2e tests run the real binaries (pitstop, pitstop-backend): build them first.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

test-chart: venv
	$(PY) -m pytest -q charts/tests

crds: ## Regenerate the CRD from the Rust types (and the chart's copy)
	$(CARGO) run --quiet -p pitstop -- crd plan > crds/maintenanceplan.yaml
	$(CARGO) run --quiet -p pitstop -- crd policy > crds/maintenancepolicy.yaml
	@if [ -d charts/pitstop/crds ]; then cp crds/maintenanceplan.yaml crds/maintenancepolicy.yaml charts/pitstop/crds/; fi

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

demo: haproxy ## A 3-instance fleet behind HAProxy, under load, rebooted by `pitstop run` (DEMO_ARGS="--target-groups 2")
	$(CARGO) build --quiet --workspace --bins
	./target/debug/pitstop-demo --out $(WORK)/demo $(DEMO_ARGS)

demo-naive: haproxy ## The same reboots without draining: the seed's 502s
	$(CARGO) build --quiet --workspace --bins
	./target/debug/pitstop-demo --naive --out $(WORK)/demo $(DEMO_ARGS)

demo-asg: haproxy ## An Auto Scaling group with ELB health checks maintained three ways: Standby, SuspendProcesses, Ignore (~3 min)
	$(CARGO) build --quiet --workspace --bins
	$(CARGO) test --quiet -p pitstop-e2e --test auto_scaling_modes -- --nocapture --test-threads=1 2>&1 | grep -E '^mode |^test |test result|panicked'

bench: haproxy ## pitstop vs naive at 3 instances/200 req/s and 10 instances/1000 req/s
	$(CARGO) build --quiet --workspace --bins
	./target/debug/pitstop-bench --out $(WORK)/bench $(BENCH_ARGS)

chaos: haproxy ## kill -9, lost answers and throttling, repeated under load (~45 min; CHAOS_ARGS="--per-scenario 30s")
	$(CARGO) build --quiet --workspace --bins
	./target/debug/pitstop-chaos --out $(WORK)/chaos $(CHAOS_ARGS)
	@# The throttling stress runs, too long for `make test`: half of all AWS calls throttled while the first
	@# instance is out (~6 min) and for a whole 3-instance run (~13 min), and throttled calls retried (~6 min).
	$(CARGO) test --quiet -p pitstop-e2e --test reliability --test zero_downtime -- --ignored --test-threads=1 2>&1 | grep -E '^test |test result|panicked'
	@# With a cluster (KUBECONFIG, or KUBE_APISERVER + ETCD) the same for `pitstop controller`; without, SKIPPED lines.
	$(CARGO) test --quiet -p pitstop-e2e --test kube_reliability -- --nocapture --test-threads=1 2>&1 | grep -E '^[|] |SKIPPED|test result|panicked'

e2e-kube: deps ## End to end against a real apiserver (KUBECONFIG, or KUBE_APISERVER + ETCD); skips loudly without
	$(CARGO) build --quiet --workspace --bins
	$(CARGO) test -p pitstop-e2e --test kube_e2e --test kube_reliability -- --nocapture --test-threads=1

bench-scale: deps ## 1,000 plans, 100 target groups: the real controller on a real apiserver, a light sandbox (~15 min)
	@if [ -z "$${KUBECONFIG:-}" ] && [ -z "$${PITSTOP_E2E_KUBE:-}" ] && { [ -z "$${KUBE_APISERVER:-}" ] || [ -z "$${ETCD:-}" ]; }; then \
		echo "make bench-scale needs a real Kubernetes API server, and none is named: nothing was measured."; \
		echo "  KUBE_APISERVER=/path/to/kube-apiserver ETCD=/path/to/etcd make bench-scale"; \
		echo "  KUBECONFIG=/path/to/a-test-cluster.kubeconfig make bench-scale   (see e2e/KUBE_E2E.md)"; \
		exit 2; \
	fi
	$(CARGO) build --quiet --workspace --bins
	@# PITSTOP_BIN=target/release/pitstop measures a release build (the memory figures in the README are of one).
	$(CARGO) test -p pitstop-e2e --test bench_scale -- --ignored --nocapture --test-threads=1 $(BENCH_SCALE_ARGS)

clean-work:
	rm -rf $(WORK)
