#!/usr/bin/env bash
# make bench: build the load generator, install the peers (once, into
# bench/build/), then run W1-W4 against smtpgate, aiosmtpd and Node's
# smtp-server (bench/runner.py). See bench/README.md.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="$BENCH/build"
PGID_FILE="$BUILD/servers.pgid"
AIOSMTPD_VERSION="1.4.6"
SMTP_SERVER_VERSION="3.21"
mkdir -p "$BUILD" "$BENCH/results"

# Servers run in their own process groups, recorded in $PGID_FILE by the
# runner; whatever happens, end them (by id) when we leave.
runner_pid=""
cleanup() {
    if [ -n "$runner_pid" ] && kill -0 "$runner_pid" 2>/dev/null; then
        kill "$runner_pid" 2>/dev/null || true
        sleep 1
    fi
    if [ -s "$PGID_FILE" ]; then
        while read -r pgid; do
            [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null || true
        done <"$PGID_FILE"
        sleep 1
        while read -r pgid; do
            [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true
        done <"$PGID_FILE"
        rm -f "$PGID_FILE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in gcc taskset node npm python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs at least 2 cores (server and load generator pinned apart)" >&2
    exit 1
fi

# 1. load generator
if [ ! -x "$BUILD/loadgen" ] || [ "$BENCH/loadgen.c" -nt "$BUILD/loadgen" ]; then
    echo "bench: building loadgen"
    gcc -O2 -Wall -Wextra -o "$BUILD/loadgen" "$BENCH/loadgen.c"
fi

# 2. aiosmtpd (+ uvloop for the aiosmtpd-uvloop variant)
AIO="$BUILD/venv-aiosmtpd"
if ! "$AIO/bin/python" -c "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '$AIOSMTPD_VERSION')" 2>/dev/null; then
    echo "bench: installing aiosmtpd $AIOSMTPD_VERSION into $AIO"
    python3 -m venv "$AIO"
    timeout 300 "$AIO/bin/pip" install -q "aiosmtpd==$AIOSMTPD_VERSION" uvloop
fi

# 3. Node's smtp-server
NODE_DIR="$BUILD/node"
if [ ! -f "$NODE_DIR/node_modules/smtp-server/package.json" ]; then
    echo "bench: installing smtp-server@$SMTP_SERVER_VERSION into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] || echo '{"name":"smtpgate-bench-peers","private":true}' >"$NODE_DIR/package.json"
    (cd "$NODE_DIR" && timeout 300 npm install --silent --no-audit --no-fund "smtp-server@$SMTP_SERVER_VERSION")
fi

# 2,000 idle connections need descriptors on both sides
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

python3 "$BENCH/runner.py" &
runner_pid=$!
wait "$runner_pid"
[ "${BENCH_SCALEOUT:-1}" = 0 ] || python3 "$BENCH/scaleout.py"  # W1/W2 behind HAProxy, ~75 s
