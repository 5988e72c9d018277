#!/bin/sh
# run.sh BUILD SECONDS TARGET... - replays each target's corpus, then
# fuzzes it for SECONDS.  The regression seeds (regress-*) are replayed one
# by one, so each failing one is named; fuzzing starts from the other
# seeds, copied into BUILD/corpus/TARGET with what earlier runs found (the
# tree's corpus is only read).  Crashes go to BUILD/artifacts/TARGET/, logs
# to BUILD/logs/.  Exits non-zero when any target crashed, leaked, broke an
# invariant or timed out; the log's tail is printed.
set -u
build=$1
secs=$2
shift 2
dir=$(dirname "$0")
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
failed=""
mkdir -p "$build/logs"

# Longest input per target (libFuzzer's -max_len); the default is 4096.
max_len() {
	case $1 in
	http_response|console_api|console_state|telegram_journal) echo 16384 ;;
	notify) echo 8192 ;;
	*) echo 4096 ;;
	esac
}

for t in "$@"; do
	bin=$build/fuzz_$t
	seeds=$dir/corpus/$t
	work=$build/corpus/$t
	art=$build/artifacts/$t
	log=$build/logs/$t.log
	mkdir -p "$work" "$art"
	: >"$log"
	opts="-timeout=20 -rss_limit_mb=2048 -max_len=$(max_len "$t") -artifact_prefix=$art/"
	[ -f "$dir/dict/$t.dict" ] && opts="$opts -dict=$dir/dict/$t.dict"
	# Replay: each regression seed alone (so every failing one is named),
	# then the other seeds together.
	bad=0
	n=0
	others=""
	for f in "$seeds"/*; do
		n=$((n + 1))
		case ${f##*/} in
		regress-*) ;;
		*) others="$others $f"; continue ;;
		esac
		# shellcheck disable=SC2086
		if ! "$bin" $opts "$f" >>"$log" 2>&1; then
			echo "!! $t: regression seed ${f##*/} fails:"
			grep -E 'invariant broken|runtime error|ERROR: |SUMMARY' "$log" | tail -n 3
			bad=1
		fi
	done
	echo "== $t: replayed $n seeds"
	# shellcheck disable=SC2086
	if [ -n "$others" ] && ! "$bin" $opts $others >>"$log" 2>&1; then
		echo "!! $t: a seed fails ($log):"
		tail -n 40 "$log"
		bad=1
	fi
	# Fuzzing starts from the seeds that pass, so a known bug does not stop it.
	# shellcheck disable=SC2086
	cp $others "$work"/
	echo "== $t: fuzzing for $secs s"
	# shellcheck disable=SC2086
	if ! "$bin" $opts -max_total_time="$secs" -print_final_stats=1 "$work" >>"$log" 2>&1; then
		echo "!! $t: failed ($log), input kept in $art/:"
		tail -n 60 "$log"
		bad=1
	else
		grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" | tr '\n' ' '
		echo
	fi
	[ $bad = 0 ] || failed="$failed $t"
done
if [ -n "$failed" ]; then
	echo "fuzz: failed:$failed"
	exit 1
fi
echo "fuzz: all $# target(s) passed"
