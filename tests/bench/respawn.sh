#!/bin/sh
# Respawn benchmark of the supervisor (see BENCHMARKS.md, "Supervisor").
# usage: tests/bench/respawn.sh [BUILD_DIR] [respawn.py options]
set -e
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
[ $# -gt 0 ] && shift
make -s BUILD="$BUILD" "$BUILD/hermes-supervisor" "$BUILD/fixtures/respawn_worker"
# build/hermes-supervisor is linked statically against musl (when musl-gcc is
# there); the same code linked dynamically against glibc runs beside it.
mkdir -p "$BUILD/bench"
make -s BUILD="$BUILD" "$BUILD/libsup.a" "$BUILD/libcommon.a" "$BUILD/obj/supervisor/main.o"
cc -o "$BUILD/bench/hermes-supervisor-glibc" "$BUILD/obj/supervisor/main.o" \
	"$BUILD/libsup.a" "$BUILD/libcommon.a"
# The floor: a bare fork/exec/wait loop, built against each libc as well.
cc -O2 -o "$BUILD/bench/bare_respawn-glibc" tests/bench/bare_respawn.c
if command -v musl-gcc >/dev/null; then
	musl-gcc -O2 -static -o "$BUILD/bench/bare_respawn-musl" tests/bench/bare_respawn.c
fi
exec /usr/bin/python3 tests/bench/respawn.py "$BUILD" "$@"
