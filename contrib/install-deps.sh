#!/bin/sh
# Installs, from Debian's packages, everything needed to build, run and test hermes.
set -e
BUILD_PKGS="build-essential pkg-config libevent-dev libssl-dev libcjson-dev check musl-tools ca-certificates libwslay-dev libqrencode-dev"
TEST_PKGS="python3 python3-pytest python3-aiohttp python3-trustme python3-websockets systemd-container iproute2 procps util-linux chromium man-db"
BENCH_PKGS="s6 runit daemontools supervisor"
# clang's libFuzzer runtime for `make fuzz-ci` / `make fuzz` (HERMES_FUZZ_DEPS=1).
FUZZ_PKGS="clang libclang-rt-dev llvm"
missing=""
for p in $BUILD_PKGS $TEST_PKGS ${HERMES_BENCH_DEPS:+$BENCH_PKGS} ${HERMES_FUZZ_DEPS:+$FUZZ_PKGS}; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
