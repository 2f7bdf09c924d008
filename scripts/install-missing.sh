#!/usr/bin/env bash
# Installs Debian packages a make target needs, only when CHECK (a shell command)
# fails, and checks again after:
#     scripts/install-missing.sh CHECK PACKAGE...
# `make test` uses it for the real Kafka clients the Kafka port is tested with
# (kcat, kafka-python, confluent-kafka: Debian's Python modules load in the
# system interpreter, /usr/bin/python3), `make bench` for redis-server.
set -euo pipefail
check=$1
shift
if bash -c "$check" >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing Debian packages: $*; install them as root: apt-get install $*" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "$@" >/dev/null
bash -c "$check"
