#!/bin/sh
# The chaos suite at its full targets: 1,000 /restarts and 200 SIGKILLs of
# the worker under 8 clients, plus every other scenario (see RELIABILITY.md).
# Figures go to stdout and, one JSON line per test, to $CHAOS_REPORT
# (default build/chaos-report.jsonl).  A random seed unless CHAOS_SEED is set.
#   usage: tests/chaos/run-full.sh [pytest args...]
cd "$(dirname "$0")/../.." || exit 1
: "${HERMES_BUILD:=$PWD/build}"
: "${CHAOS_REPORT:=$HERMES_BUILD/chaos-report.jsonl}"
: "${CHAOS_SEED:=$(date +%s)}"
export HERMES_BUILD CHAOS_REPORT CHAOS_SEED CHAOS_SCALE=1
echo "chaos: seed $CHAOS_SEED, figures in $CHAOS_REPORT"
: > "$CHAOS_REPORT"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider -s tests/chaos "$@"
