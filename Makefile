# The front door. `make run` starts a single member; `make test` is everything CI checks.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test check fmt sim build

build:
	$(CARGO) build --release --bin detcd

run: build
	./target/release/detcd $(ARGS)

# Everything CI needs, from a fresh machine (no protoc; protos compile with protox).
test:
	$(CARGO) test --workspace

# Formatting, lints with warnings denied, and the purity build: the core without tokio/tonic.
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) check -p detcd --no-default-features --lib
	$(CARGO) check -p detcd-sim

fmt:
	$(CARGO) fmt --all
