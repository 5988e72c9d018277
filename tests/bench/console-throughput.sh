#!/bin/sh
# Console throughput: loadgen's POST ?wait round trips against a real
# hermes-worker with the echo agent (console -> hub -> echo -> reply).
#   tests/bench/console-throughput.sh [BUILD] [-- LOADGEN ARGS]
# Defaults: 64 connections, 10 s after 1 s of warm-up.  Set PIN=1 to put
# the worker on CPU 0 and the load generator on CPU 1.  TARGET=stub runs
# the console platform alone behind a stub echo hub (console_stubhub).
set -eu
BUILD=${1:-build}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
[ -x "$BUILD/hermes-worker" ] && [ -x "$BUILD/bench/loadgen" ] || {
	echo "build first: make bench (or make $BUILD/bench/loadgen)" >&2; exit 2; }
DIR=$(mktemp -d)
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$DIR/gateway.json" <<JSON
{ "state_dir": "$DIR/state", "agent": { "backend": "echo" },
  "platforms": { "console": { "enabled": true, "listen": "127.0.0.1:$PORT" } } }
JSON
W_PIN=""; L_PIN=""
if [ "${PIN:-0}" = 1 ]; then W_PIN="taskset -c 0"; L_PIN="taskset -c 1"; fi
if [ "${TARGET:-worker}" = stub ]; then
	env -u HERMES_CONSOLE_TOKEN $W_PIN "$BUILD/bench/console_stubhub" "$PORT" \
		"$DIR/state" 2> "$DIR/worker.log" &
else
	env -u NOTIFY_SOCKET -u HERMES_CONSOLE_TOKEN HERMES_HOME="$DIR" \
		$W_PIN "$BUILD/hermes-worker" --config "$DIR/gateway.json" 2> "$DIR/worker.log" &
fi
WPID=$!
trap 'kill $WPID 2>/dev/null; wait $WPID 2>/dev/null; rm -rf "$DIR"' EXIT INT TERM
i=0
until /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$PORT),1)" 2>/dev/null; do
	i=$((i + 1)); [ $i -gt 200 ] && { cat "$DIR/worker.log" >&2; exit 1; }
	sleep 0.05
done
echo "${TARGET:-worker} pid $WPID on 127.0.0.1:$PORT"
$L_PIN "$BUILD/bench/loadgen" -p "$PORT" -c 64 -d 10 -W 1 "$@"
RSS=$(awk '/VmRSS/ {print $2}' /proc/$WPID/status)
HWM=$(awk '/VmHWM/ {print $2}' /proc/$WPID/status)
echo "worker RSS after the run: ${RSS} KiB (peak ${HWM} KiB)"
