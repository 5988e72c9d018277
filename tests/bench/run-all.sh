#!/bin/sh
# Runs every benchmark with the settings BENCHMARKS.md reports, one after
# the other (they would disturb each other side by side).
#   tests/bench/run-all.sh [BUILD_DIR]      (make bench calls this)
# The supervisor comparison needs s6, runit, daemontools and supervisor:
#   HERMES_BENCH_DEPS=1 contrib/install-deps.sh
set -eu
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
PY=/usr/bin/python3

echo "== supervisor: respawn latency, memory, idle wake-ups"
tests/bench/respawn.sh "$BUILD" --respawns 200 --fast 1000 --idle 10
echo "== worker: /restart -> READY -> online notice, idle memory"
$PY tests/bench/restart_bench.py "$BUILD" -n 60
echo "== console -> echo -> reply throughput"
tests/bench/console-throughput.sh "$BUILD"
TARGET=stub tests/bench/console-throughput.sh "$BUILD"
echo "== telegram: throughput and /restart -> first answer"
$PY tests/bench/tg_bench.py "$BUILD" --c-fake -n 20000 --chats 50
$PY tests/bench/tg_bench.py "$BUILD" -n 4000 --restarts 50
$PY tests/bench/tg_kill_doubles.py "$BUILD" -k 50
echo "== discord: throughput and /restart -> first answer (session resumed)"
$PY tests/bench/discord_bench.py "$BUILD" -n 4000 --restarts 50
echo "== HTTP client and agent backends"
"$BUILD/bench/net_bench" -n 4000 -c 8
