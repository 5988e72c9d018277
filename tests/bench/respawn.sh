#!/bin/sh
# Respawn benchmark of the supervisor (see BENCHMARKS.md, "Supervisor").
# usage: tests/bench/respawn.sh [BUILD_DIR] [respawn.py options]
set -e
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
[ $# -gt 0 ] && shift
make -s BUILD="$BUILD" "$BUILD/hermes-supervisor" "$BUILD/fixtures/respawn_worker"
# The same supervisor linked statically against glibc, for the memory comparison.
mkdir -p "$BUILD/bench"
cc -static -o "$BUILD/bench/hermes-supervisor-static" "$BUILD/obj/supervisor/main.o" \
	"$BUILD/libsup.a" "$BUILD/libcommon.a"
exec /usr/bin/python3 tests/bench/respawn.py "$BUILD" "$@"
