# murmur: two commands set up a fresh Debian 12 machine: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# iproute2 and util-linux: `ip` and `unshare` for the py-consul suite's private network namespaces;
# nftables: the fault lab's partitions and loss (tests/lab).
APT_PACKAGES := dnsutils dnsperf dnsmasq iproute2 util-linux nftables
# Peers the benchmarks compare against (not needed by `make test`).
BENCH_APT_PACKAGES := serf etcd-server
# The VM lab of `make lab-test` (tests/lab): mmdebstrap (debootstrap if missing) builds the Debian 12 image, systemd-nspawn
# boots the VMs, ansible-core runs deploy/ansible against them.
LAB_APT_PACKAGES := mmdebstrap debootstrap systemd-container ansible-core iproute2 util-linux openssh-client
STAMP := $(VENV)/.installed

.PHONY: run test test-full bench lint types unit e2e pyconsul chaos soak lab install apt apt-bench apt-lab apt-install lab-test lab-upgrade-test lab-down clean fuzz-dns fuzz fuzz-smoke

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# System packages the tests and benchmarks use (dig, dnsperf, dnsmasq). Needs root, as CI is.
apt:
	@$(MAKE) -s apt-install PKGS="$(APT_PACKAGES)"

apt-bench:
	@$(MAKE) -s apt-install PKGS="$(APT_PACKAGES) $(BENCH_APT_PACKAGES)"

apt-lab:
	@$(MAKE) -s apt-install PKGS="$(APT_PACKAGES) $(LAB_APT_PACKAGES)"

apt-install:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (run as root, or: sudo apt-get install$$missing)"; fi; \
	fi

run: install
	BIN=$(BIN) examples/run-dev.sh

lint: install
	$(BIN)/ruff check .

types: install
	mkdir -p build/typing && ln -sfn ../.. build/typing/murmur
	$(BIN)/mypy -p murmur

unit: install
	$(BIN)/pytest -q tests/unit

e2e: install
	$(BIN)/pytest -q tests/e2e

# py-consul 1.8.0's own tests (sdist from PyPI) against `murmur agent --dev`, one network namespace
# per module (docs/operations.md). MODULES="agent status" runs a subset.
pyconsul: install
	$(BIN)/python tests/pyconsul/run.py $(MODULES)

# The fault lab (tests/lab, needs root): real agents in network namespaces, a seeded nemesis,
# linearizability / lost-write / false-dead checkers. `make chaos` is the short run CI does
# (>= 20 fault cycles, 5 servers + 2 clients, under 6 minutes; SEED=N replays a seed); `make lab`
# runs the lab's own tests (faults, and the planted bugs its checkers must catch).
chaos: install apt
	cd tests && $(CURDIR)/$(BIN)/python -m lab.chaos $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

# The soak (docs/reliability.md): the chaos runner driven by wall time, 5 servers + 3 clients,
# every fault kind (delay too), memberlist's local gossip preset as it is. HOURS=1 by default.
HOURS ?= 1
soak: install apt
	cd tests && nice -n 5 $(CURDIR)/$(BIN)/python -m lab.chaos --soak --hours $(HOURS) $(if $(SEED),--seed $(SEED))

lab: install apt
	$(BIN)/pytest -q tests/lab

# The Ansible role (deploy/ansible) on 5 booted VMs: systemd-nspawn over a cached (mmdebstrap)
# Debian 12 image in build/lab, one network namespace each (10.99.77.0/24, inside the lab only).
# Root only. docs/operations.md, "The VM lab".
lab-test: install apt-lab
	tests/lab/run.sh

# The rolling upgrade (upgrade.yml, to <version>+lab2) on the lab, DNS probed every 200 ms.
lab-upgrade-test: install apt-lab
	KEEP=1 tests/lab/run.sh && tests/lab/upgrade.sh; rc=$$?; LAB=build/lab tests/lab/lab.sh down; exit $$rc

# Stops the VMs of an interrupted or KEEP=1 lab run.
lab-down:
	LAB=build/lab tests/lab/lab.sh down

# Everything CI runs, each stage timed (budgets: docs/operations.md and the conventions page).
test:
	@bash .ci/stages.sh

# CI's stages, then the long runs: slow-marked tests (soaks, long simulations) and every Raft
# failpoint hit 20 times instead of 3.
test-full: test
	$(BIN)/pytest -q -m slow --runslow tests || [ $$? -eq 5 ]  # 5: no slow tests collected
	MURMUR_FAILPOINT_REPEATS=20 $(BIN)/pytest -q tests/e2e/test_raft_cluster.py -k failpoints
	$(MAKE) -s lab-upgrade-test
	$(MAKE) -s fuzz
	$(MAKE) -s soak HOURS=$(HOURS)

# DNS fuzzing against a real agent for FUZZ_SECONDS (default 600): hostile packets interleaved
# with valid queries; the CI smoke is the same test with 60 batches.
FUZZ_SECONDS ?= 600
fuzz-dns: install
	MURMUR_DNS_FUZZ_SECONDS=$(FUZZ_SECONDS) MURMUR_DNS_FUZZ_EXAMPLES=200 $(BIN)/pytest -q -s tests/e2e/test_dns_fuzz.py

# Hypothesis fuzzing of every decoder (tests/fuzz): gossip packets after decryption, sealed
# envelopes and stream frames, the gossip core; Raft messages, entries, hard state, conf changes,
# the Raft transport and core; catalog commands and the store; config files (TOML, Consul JSON);
# and a real dev agent's HTTP requests, server RPC frames and Raft port. FUZZ_TARGET_SECONDS per
# target (default 60), then DNS (fuzz-dns, FUZZ_SECONDS). The CI smoke gives each target 3 s.
FUZZ_TARGET_SECONDS ?= 60
fuzz: install
	MURMUR_FUZZ_SECONDS=$(FUZZ_TARGET_SECONDS) $(BIN)/pytest -q -p no:cacheprovider tests/fuzz
	$(MAKE) -s fuzz-dns

fuzz-smoke: install
	MURMUR_FUZZ_SECONDS=3 $(BIN)/pytest -q -p no:cacheprovider tests/fuzz

bench: install apt-bench
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) build *.egg-info
