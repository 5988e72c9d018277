#!/usr/bin/env bash
# The fresh-machine test: the README's two commands, exactly as written, on a
# Debian 12 that has never seen the project.
#
# A minimal Debian 12 root (debootstrap --variant=minbase) is built once and
# cached outside the checkout; each run boots a throwaway container on it
# (systemd-nspawn --volatile=overlay: every write vanishes, the cache stays
# clean), clones the commit under test inside, and there runs
#   make deps run    -> the console must answer a POST with the echo agent,
#   make deps test   -> must pass.
# The Debian mirror is read from this host's own apt sources at run time.
#
# Environment:
#   FRESH_CACHE     where the root is cached (default /var/cache/hermes-fresh)
#   FRESH_REQUIRED  1: a test that cannot run here fails instead of skipping
#   FRESH_USER      run the commands as this sudo user instead of root
#   FRESH_TESTS     0: stop after `make deps run` (for a quick check by hand)
set -uo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${FRESH_CACHE:-/var/cache/hermes-fresh}
ROOT=$CACHE/bookworm-minbase
PORT=8642
SUITE=bookworm
INCLUDE=git,ca-certificates,make,curl,sudo

log() { printf 'fresh-machine: %s\n' "$*" >&2; }

# A test that cannot run here says why; it never passes silently.
skip() {
	log "SKIPPED: $*"
	if [ "${FRESH_REQUIRED:-0}" = 1 ]; then
		echo "0 passed, 1 failed"
		exit 1
	fi
	echo "0 passed, 0 failed, 1 skipped"
	exit 0
}

fail() {
	log "FAILED: $*"
	echo "0 passed, 1 failed"
	exit 1
}

# The first Debian mirror named in this host's apt sources (deb822 or
# one-line format).
host_mirror() {
	local f uri
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
		[ -n "$uri" ] && { echo "$uri"; return; }
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/) { print $i; exit } break } }' "$f")
		[ -n "$uri" ] && { echo "$uri"; return; }
	done
}

preflight() {
	[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap and systemd-nspawn)"
	if ! command -v debootstrap >/dev/null || ! command -v systemd-nspawn >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			debootstrap systemd-container >/dev/null 2>&1 ||
			skip "cannot install debootstrap / systemd-container"
	fi
	git -C "$SRC" rev-parse --verify -q HEAD >/dev/null || skip "$SRC is not a git checkout"
	if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
		skip "port $PORT is in use on this host (the container shares its network)"
	fi
}

# Builds the cached root once; a half-built one is never used.
build_root() {
	[ -f "$ROOT/.hermes-fresh-ok" ] && return 0
	local mirror tmp
	mirror=$(host_mirror)
	[ -n "$mirror" ] || skip "no Debian mirror in this host's apt sources"
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/build.XXXXXX")
	log "building a minimal $SUITE root (once) in $ROOT"
	if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$mirror" \
		>"$CACHE/debootstrap.log" 2>&1; then
		tail -5 "$CACHE/debootstrap.log" >&2
		rm -rf "$tmp"
		skip "debootstrap failed (see $CACHE/debootstrap.log)"
	fi
	# A sudo user for FRESH_USER, as a new user's machine would have.
	chroot "$tmp" useradd -m -s /bin/bash -G sudo dev
	echo 'dev ALL=(ALL) NOPASSWD: ALL' >"$tmp/etc/sudoers.d/dev"
	chmod 0440 "$tmp/etc/sudoers.d/dev"
	touch "$tmp/.hermes-fresh-ok"
	rm -rf "$ROOT"
	mv "$tmp" "$ROOT"
}

# The script run inside the container: the README's commands as written.
write_inner() {
	cat >"$1" <<'INNER'
#!/bin/bash
set -uo pipefail
cd "$HOME"
git config --global --add safe.directory '*'
git clone -q /src/repo hermes || exit 10
cd hermes
git checkout -q "$FRESH_COMMIT" || exit 10
echo "== make deps run"
# Its own process group (setsid execs in place: not a group leader under
# a shell without job control), so the whole run can be stopped at once.
setsid make deps run >"$HOME/run.log" 2>&1 &
RUN=$!
reply=""
for _ in $(seq 1 900); do
	if reply=$(curl -sf -m 10 -X POST "http://127.0.0.1:8642/v1/messages?wait=5" \
		-d '{"chat_id":"fresh","user_id":"local","text":"hello fresh machine"}' 2>/dev/null); then
		break
	fi
	kill -0 "$RUN" 2>/dev/null || break
	sleep 1
done
kill -TERM -- "-$RUN" 2>/dev/null
wait "$RUN"
echo "$reply"
case "$reply" in
*'"hello fresh machine"'*) echo "== the console answered" ;;
*) echo "== make deps run did not serve the console"; tail -40 "$HOME/run.log"; exit 11 ;;
esac
[ "${FRESH_TESTS:-1}" = 0 ] && exit 0
echo "== make deps test"
make deps test || exit 12
INNER
}

main() {
	preflight
	build_root
	local inner commit who
	WORK=$(mktemp -d /tmp/hermes-fresh.XXXXXX)
	trap 'rm -rf "$WORK"' EXIT
	inner=$WORK/inner.sh
	write_inner "$inner"
	chmod 755 "$inner"
	commit=$(git -C "$SRC" rev-parse HEAD)
	# Only the commit under test goes into the container, as a bare
	# repository to clone from (a worktree's .git points outside the tree).
	git init -q --bare --initial-branch=main "$WORK/repo.git" &&
		git -C "$SRC" push -q "$WORK/repo.git" HEAD:refs/heads/main ||
		fail "cannot export $commit from $SRC"
	who=${FRESH_USER:-root}
	log "commit $commit as $who in a throwaway container"
	local start=$SECONDS rc
	systemd-nspawn -q -D "$ROOT" --volatile=overlay --register=no --keep-unit \
		--resolv-conf=copy-host --bind-ro="$WORK/repo.git":/src/repo --bind-ro="$inner":/src/inner.sh \
		--setenv=FRESH_COMMIT="$commit" --setenv=FRESH_TESTS="${FRESH_TESTS:-1}" \
		--setenv=DEBIAN_FRONTEND=noninteractive --setenv=PYTEST_ADDOPTS=-rs --user="$who" --chdir=/ \
		-- /bin/bash -c 'export HOME=$(getent passwd "$(id -un)" | cut -d: -f6); exec /src/inner.sh'
	rc=$?
	log "container finished in $((SECONDS - start)) s with status $rc"
	case $rc in
	0) echo "1 passed, 0 failed" ;;
	10) fail "the clone or checkout failed inside the container" ;;
	11) fail "\`make deps run\` did not serve the console" ;;
	12) fail "\`make deps test\` failed" ;;
	*) fail "the container exited with status $rc" ;;
	esac
}

main "$@"
