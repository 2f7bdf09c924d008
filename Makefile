# Mini-Kafka over shared memory.
#   make        release binaries in bin/ (broker, producer, consumer)
#   make run    build, then start the broker with its defaults in the foreground
#   make demo   a broker, two producers, four consumers in two groups
#   make test   formatting, lints, every test (unit, property, end-to-end), and a
#               check that the benchmark and the fuzz targets still compile
#   make fuzz   each fuzz target for FUZZ_SECONDS (needs a nightly toolchain)
#   make bench  the broker against a Unix-socket, an SPSC-ring and a Redis Streams
#               baseline (SPEC §9)
#   make microbench  criterion micro-benchmarks of the ring's operations

CARGO ?= cargo
BINARIES := broker producer consumer

PROMETHEUS_PARSER := target/pyenv/.prometheus-client

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := control_frame ring_state region_header audit_file index_file

.PHONY: all build run demo test fmt-check lint check-outside kafka-clients fuzz bench microbench clean

all: build

build:
	$(CARGO) build --release --locked --bins -p broker -p producer -p consumer
	mkdir -p bin
	cp $(addprefix target/release/,$(BINARIES)) bin/

run: build
	cd bin && ./broker

demo: build
	bash scripts/demo.sh bin

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# The end-to-end tests start the built binaries, so build them first. The benchmark,
# the fuzz targets and the micro-benchmarks are not built by the tests: they are
# checked to compile here, so that none can rot (the fuzz targets on the stable
# toolchain).
test: fmt-check lint check-outside $(PROMETHEUS_PARSER) kafka-clients
	$(CARGO) build --locked --workspace --bins
	$(CARGO) test --locked --workspace

# The Kafka listener's tests run Debian's kcat, kafka-python and confluent-kafka.
kafka-clients:
	bash scripts/install-missing.sh \
		'command -v kcat && /usr/bin/python3 -c "import kafka, confluent_kafka"' \
		kcat python3-kafka python3-confluent-kafka

# The metrics tests read the broker's exposition with the Prometheus project's own
# parser (Python's prometheus_client), installed once in a virtual environment.
$(PROMETHEUS_PARSER):
	python3 -m venv target/pyenv
	target/pyenv/bin/pip install --quiet --disable-pip-version-check prometheus_client==0.21.1
	touch $@

check-outside:
	cd bench && $(CARGO) check --locked
	cd fuzz && $(CARGO) check
	$(CARGO) check --locked -p shm-layout --features bench --benches

# The benchmark is its own crate, outside the workspace, so `make test` never builds it.
# W9's baseline is Debian's redis-server.
bench: build
	bash scripts/install-missing.sh 'command -v redis-server' redis-server
	cd bench && $(CARGO) build --release
	cd bench && BENCH_BIN_DIR=../target/release ./target/release/mini-kafka-bench

microbench:
	$(CARGO) bench -p shm-layout --features bench --bench ring

# New inputs go to a scratch corpus; the committed seeds in fuzz/corpus stay as they are.
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz-corpus/$$t; \
		(cd fuzz && $(CARGO) +nightly fuzz run $$t ../target/fuzz-corpus/$$t corpus/$$t \
			-- -max_total_time=$(FUZZ_SECONDS)); \
	done

clean:
	$(CARGO) clean
	rm -rf bin
