# wasmproc: the one entry point. `make run` for the demo, `make test` for everything.

CARGO ?= cargo
GUEST_TARGET := wasm32-wasip2
GUEST_DIR := guests/target/$(GUEST_TARGET)/release
# Compiled guest artifacts for tests and the demo stay inside the tree.
export WASMPROC_CACHE_DIR ?= $(CURDIR)/target/wasmproc-cache

.PHONY: all setup guests build test run bench soak lint fmt fuzz clean

all: build guests

## setup: the wasm targets guests are built for
setup:
	rustup target add wasm32-wasip2 wasm32-wasip1

## guests: every guest in guests/, as wasm components
guests: setup
	cd guests && $(CARGO) build --release --target $(GUEST_TARGET)
	cd guests && $(CARGO) build --release --target wasm32-wasip1 -p wasi-tool

## build: the host CLI, the runner and the library
build:
	$(CARGO) build

## test: build everything and run every test
test: guests
	$(CARGO) test --workspace

## run: the demo app: a coordinator and two prime workers, each in its own process
run: guests build
	./target/debug/wasmproc run examples/primes-app/app.toml

## bench: wasmproc against Node's fork and the raw pipe floor (release build)
bench: guests
	$(CARGO) build --release -p wasmproc --bins -p wasmproc-bench
	./target/release/wasmproc-bench

## soak: 1,000 guests relaying tokens in a ring for 10 minutes (release build)
SOAK_ARGS ?= --guests 1000 --tokens 1000 --minutes 10
soak: guests
	$(CARGO) build --release -p wasmproc --bins -p wasmproc-bench
	./target/release/soak $(SOAK_ARGS)

## lint: formatting and clippy, as the project keeps them
lint:
	$(CARGO) fmt --all -- --check
	cd guests && $(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	cd guests && $(CARGO) clippy --target $(GUEST_TARGET) --all-targets -- -D warnings

## fuzz: the frame decoder and manifest parser fuzzers, FUZZ_SECONDS each (nightly)
FUZZ_SECONDS ?= 600
fuzz:
	cargo install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz run -O frame_decoder -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo +nightly fuzz run -O manifest -- -max_total_time=$(FUZZ_SECONDS)

fmt:
	$(CARGO) fmt --all
	cd guests && $(CARGO) fmt --all

clean:
	$(CARGO) clean
	cd guests && $(CARGO) clean
