# rlvr — the two commands of the README, and the pieces they are made of.
#   make run    set up, build, and run the tiny built-in recipe end to end
#   make test   set up, build, check formatting and lints, and run every test
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := source scripts/env.sh &&
RECIPE ?= tiny-arith
RUN_DIR ?= runs/$(RECIPE)

.PHONY: setup build run test install fmt clippy

setup:
	@scripts/setup.sh

build: setup
	$(ENV) cargo build --release --locked -p rlvr-actors

run: build
	$(ENV) "$$CARGO_TARGET_DIR/release/rlvr" run $(RECIPE) --out $(RUN_DIR) --overwrite

fmt:
	cargo fmt --all --check

clippy: setup
	$(ENV) cargo clippy --locked --workspace --all-targets -- -D warnings

test: setup fmt clippy
	$(ENV) OMP_NUM_THREADS=1 cargo test --release --locked --workspace

install: setup
	$(ENV) cargo install --locked --path actors
