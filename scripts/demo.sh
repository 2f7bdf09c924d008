#!/usr/bin/env bash
# A short, self-contained demonstration: one broker on a free port, four consumers
# in two groups, two producers; then what each consumer printed.
set -euo pipefail
BIN=$(cd "${1:-bin}" && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() { # wait_for FILE PATTERN: up to 10 s for PATTERN to appear in FILE
    for _ in $(seq 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: timed out waiting for '$2' in $1" >&2
    exit 1
}

echo "== starting the broker (2 groups, data dir $WORK)"
"$BIN/broker" --port 0 --shm-name "/minikafka-demo-$$" --data-dir "$WORK" \
    >"$WORK/broker.out" 2>"$WORK/broker.err" &
PIDS+=($!)
wait_for "$WORK/broker.out" listening
cat "$WORK/broker.out"
ADDR=$(sed -E 's/^listening on ([^,]+),.*/\1/' "$WORK/broker.out")

echo "== four consumers join the least-loaded group in turn"
for i in 1 2 3 4; do
    "$BIN/consumer" -b "$ADDR" --id "consumer-$i" --count 3 \
        >"$WORK/consumer-$i.out" 2>"$WORK/consumer-$i.err" &
    PIDS+=($!)
    wait_for "$WORK/consumer-$i.err" "joined group"
    cat "$WORK/consumer-$i.err"
done

echo "== two producers send three messages each"
"$BIN/producer" -b "$ADDR" --id alice "alice: hello" "alice: how are you" "alice: bye"
printf 'bob: one\nbob: two\nbob: three\n' | "$BIN/producer" -b "$ADDR" --id bob

echo "== broker status"
"$BIN/broker" status -b "$ADDR"

for i in 1 2 3 4; do wait "${PIDS[$i]}"; done
for i in 1 2 3 4; do
    echo "== consumer-$i ($(sed -E 's/joined group ([^ ]+).*/\1/' "$WORK/consumer-$i.err")) received:"
    cat "$WORK/consumer-$i.out"
done
echo "== every group received all six messages; within a group they were dealt in turn"

echo "== stopping the broker (SIGTERM) flushes the files"
kill -TERM "${PIDS[0]}"
wait "${PIDS[0]}"
for f in persistencia_mensajes.txt log_consumo.txt offsets.txt; do
    echo "== $f"
    cat "$WORK/$f"
done
