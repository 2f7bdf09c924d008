# Mini-Kafka over shared memory.
#   make        release binaries in bin/ (broker, producer, consumer)
#   make run    build, then start the broker with its defaults in the foreground
#   make demo   a broker, two producers, four consumers in two groups
#   make test   formatting, lints, and every test (unit, property, end-to-end)

CARGO ?= cargo
BINARIES := broker producer consumer

.PHONY: all build run demo test fmt-check lint clean

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

# The end-to-end tests start the built binaries, so build them first.
test: fmt-check lint
	$(CARGO) build --locked --workspace --bins
	$(CARGO) test --locked --workspace

clean:
	$(CARGO) clean
	rm -rf bin
