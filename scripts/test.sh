#!/usr/bin/env bash
# Runs all of waybill's tests, preparing what they need first:
# PostgreSQL on 127.0.0.1:5432, a Prometheus server binary, and a
# Kafka-protocol broker on loopback.
# Then: formatting, lints, unit and integration tests, and the integration
# tests once more on Kafka + PostgreSQL (WAYBILL_TEST_BACKEND=kafka).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return 0; fi
  say "PostgreSQL is not answering on 127.0.0.1:5432; starting it"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && return 0
    sleep 1
  done
  echo "PostgreSQL is required by the tests and could not be started on 127.0.0.1:5432" >&2
  exit 1
}

ensure_prometheus() {
  if command -v prometheus >/dev/null 2>&1; then return 0; fi
  say "a real Prometheus server is needed (tests/it/prometheus.rs); installing Debian's prometheus"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >&2 || true
  fi
  command -v prometheus >/dev/null 2>&1 && return 0
  echo "Prometheus is required by the tests: install it (apt-get install prometheus)" >&2
  exit 1
}

ensure_postgres
ensure_prometheus
export WAYBILL_TEST_POSTGRES="${WAYBILL_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"

if [ -z "${WAYBILL_TEST_KAFKA:-}" ]; then
  say "starting a Kafka-protocol test broker"
  WAYBILL_TEST_KAFKA="$(scripts/kafka-broker.sh start)"
  export WAYBILL_TEST_KAFKA
  trap 'scripts/kafka-broker.sh stop >/dev/null 2>&1 || true' EXIT
fi
say "Kafka test broker at $WAYBILL_TEST_KAFKA"

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
say "cargo test (embedded bus and store)"
cargo test --locked
say "cargo test --test it (Kafka bus, PostgreSQL store)"
WAYBILL_TEST_BACKEND=kafka cargo test --locked --test it
