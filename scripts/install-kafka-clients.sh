#!/usr/bin/env bash
# The real Kafka clients the Kafka listener's tests run against (docs/kafka.md):
# Debian's kcat, python3-kafka (kafka-python) and python3-confluent-kafka
# (librdkafka), installed only when missing. Debian's Python modules load in
# the system interpreter, /usr/bin/python3, which the tests use.
set -euo pipefail
have() {
    command -v kcat >/dev/null 2>&1 &&
        /usr/bin/python3 -c 'import kafka, confluent_kafka' >/dev/null 2>&1
}
if have; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "the Kafka listener's tests need kcat, python3-kafka and python3-confluent-kafka (Debian packages): install them, as root: apt-get install kcat python3-kafka python3-confluent-kafka" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq kcat python3-kafka python3-confluent-kafka >/dev/null
have
