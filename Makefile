# wasmproc: the one entry point. `make run` for the demo, `make test` for everything.

CARGO ?= cargo
GUEST_TARGET := wasm32-wasip2
GUEST_DIR := guests/target/$(GUEST_TARGET)/release
# Compiled guest artifacts for tests and the demo stay inside the tree.
export WASMPROC_CACHE_DIR ?= $(CURDIR)/target/wasmproc-cache

# The Python and JavaScript toolchains, pinned: componentize-py from PyPI in
# a virtual environment of its own, componentize-js from npm (guests/js/package-lock.json).
COMPONENTIZE_PY_VERSION := 0.25.1
PY_TOOLS := $(CURDIR)/target/tools/python
COMPONENTIZE_PY := $(PY_TOOLS)/bin/componentize-py
COMPONENTIZE_JS := $(CURDIR)/guests/js/node_modules/.bin/componentize-js
PY_GUESTS := $(patsubst guests/python/%/app.py,guests/target/python/%.wasm,$(wildcard guests/python/*/app.py))
JS_GUESTS := $(patsubst guests/js/%/app.js,guests/target/js/%.wasm,$(wildcard guests/js/*/app.js))
WIT := $(wildcard wit/*.wit wit/deps/*/*.wit)

.PHONY: all setup tools guests rust-guests python-guests js-guests build runner release test run bench soak lint fmt fuzz clean

all: build guests

## setup: the wasm targets guests are built for
setup:
	rustup target add wasm32-wasip2 wasm32-wasip1

## tools: componentize-py and componentize-js, the pinned versions
tools: $(COMPONENTIZE_PY) $(COMPONENTIZE_JS)

$(COMPONENTIZE_PY):
	python3 -m venv $(PY_TOOLS)
	$(PY_TOOLS)/bin/pip install --quiet --disable-pip-version-check componentize-py==$(COMPONENTIZE_PY_VERSION)

$(COMPONENTIZE_JS): guests/js/package.json guests/js/package-lock.json
	cd guests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## guests: every guest in guests/, as wasm components (Rust, Python, JavaScript)
guests: rust-guests python-guests js-guests

rust-guests: setup
	cd guests && $(CARGO) build --release --target $(GUEST_TARGET)
	cd guests && $(CARGO) build --release --target wasm32-wasip1 -p wasi-tool

python-guests: $(PY_GUESTS)

guests/target/python/%.wasm: guests/python/%/app.py $(wildcard guests/python/wasmproc_guest/*.py) $(WIT) | $(COMPONENTIZE_PY)
	@mkdir -p $(@D)
	cd guests/python && $(COMPONENTIZE_PY) --quiet -d ../../wit -w command componentize -p . -p $* app -o ../target/python/$*.wasm

js-guests: $(JS_GUESTS)

guests/target/js/%.wasm: guests/js/%/app.js guests/js/wasmproc-guest.js $(WIT) | $(COMPONENTIZE_JS)
	@mkdir -p $(@D)
	cd guests/js && $(COMPONENTIZE_JS) $*/app.js --wit ../../wit --world-name command --disable http fetch-event -o ../target/js/$*.wasm

## build: the host CLI, the runner and the library
build: runner
	$(CARGO) build

# The runner is linked statically, as a static PIE (ASLR stays): a process
# per guest then starts without the dynamic loader, its symbol lookups and
# libgcc_s. getrandom must call getrandom(2) itself, as it cannot look the
# C library's function up in a static binary (and the sandbox refuses its
# fallback, /dev/urandom). The flags go to the runner's own build only
# (`--target`), which lands in target/$(HOST_TRIPLE)/ and is linked beside
# the host's binaries, where the host looks for it. A runner built plainly
# (`cargo install --path host/runner`) works the same, starting slower.
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
RUNNER_RUSTFLAGS := -C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"
RUNNER_BUILD = CARGO_TARGET_$(shell echo $(HOST_TRIPLE) | tr 'a-z.-' 'A-Z__')_RUSTFLAGS='$(RUNNER_RUSTFLAGS)' \
	$(CARGO) build -p wasmproc-runner --target $(HOST_TRIPLE)
# The runner of profile $(1), linked beside that profile's host binaries.
link_runner = mkdir -p target/$(1) && ln -f target/$(HOST_TRIPLE)/$(1)/wasmproc-runner target/$(1)/wasmproc-runner

## runner: wasmproc-runner, built on its own (built together with the host,
## cargo would unify its features with the host's and link Cranelift into it)
runner:
	$(RUNNER_BUILD)
	$(call link_runner,debug)

## release: what `make bench` and `make soak` run, in the release profile
release:
	$(CARGO) build --release -p wasmproc --bins -p wasmproc-bench
	$(RUNNER_BUILD) --release
	$(call link_runner,release)

## test: build everything and run every test
test: guests runner
	PATH="$(PY_TOOLS)/bin:$$PATH" $(CARGO) test --workspace --exclude wasmproc-runner

## run: the demo app: a coordinator and two prime workers, each in its own process
run: guests build
	./target/debug/wasmproc run examples/primes-app/app.toml

## bench: wasmproc against Node's fork and the raw pipe floor (release build)
bench: guests release
	./target/release/wasmproc-bench

## soak: 1,000 guests relaying tokens in a ring for 10 minutes (release build)
SOAK_ARGS ?= --guests 1000 --tokens 1000 --minutes 10
soak: guests release
	./target/release/soak $(SOAK_ARGS)

## lint: formatting and clippy, as the project keeps them
lint:
	$(CARGO) fmt --all -- --check
	cd guests && $(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p wasmproc-runner --target $(HOST_TRIPLE) -- -D warnings
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
