#!/usr/bin/env bash
# Whole-process targets of issue 14 ("speed to the floor"): each
# `proto-stream` command beside its peer, timed with hyperfine (no shell,
# page cache warm), with the target and PASS or MISS.
#
#   verify small  >= 5x  btrfs_stream_decode (the btrfs-stream crate)
#   dump small    >= 6x  btrfs receive --dump
#   dump big      >= 2x  btrfs receive --dump
#   verify big    >= 0.9x the speed of cat (cat time / verify time)
#   chunk big, small <= 1.3x the time of split -b 1MiB (both into tmpfs)
#
# Last, what verify small cannot go below with one decoding thread: the
# process's start plus small-files/proto-btrfs-verify-1m (the decode bench's
# last run), beside what the target allows.
#
# usage: benches/whole.sh
#   streams: $PROTO_STREAM_PERF_DIR/{small-v2,big-v2}.stream
#   (PROTO_STREAM_PERF_DIR defaults to <workspace>/perf; make them with
#   scripts/mkperf.sh). HYPERFINE_ARGS: hyperfine options instead of the
#   default "--min-runs 20" (e.g. "--runs 50"). Ratios are taken within
#   one hyperfine run: on a busy machine, run it again rather than trust
#   one MISS.
set -euo pipefail
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"
PEER=$TARGET/release/examples/btrfs_stream_decode
SMALL=$PERF/small-v2.stream
BIG=$PERF/big-v2.stream
for tool in split cat; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done
for f in "$SMALL" "$BIG"; do
    [ -r "$f" ] || { echo "$f not found (run scripts/mkperf.sh $PERF as root)" >&2; exit 1; }
done

(cd "$ROOT" && cargo build --quiet --release -p proto-stream-cli &&
    cargo build --quiet --profile bench -p proto-stream-benches --example btrfs_stream_decode)

W=$(mktemp -d)
# The chunks and split pieces go to tmpfs, so that no disk is timed.
SHM=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$W" "$SHM"' EXIT

echo "proto-stream: $("$BIN" --version) ($BIN)"
echo "btrfs-progs: $("$BTRFS" --version)"
echo "hyperfine: $(hyperfine --version); $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# The same dump, byte for byte, before anything is timed.
for f in "$SMALL" "$BIG"; do
    "$BIN" dump "$f" > "$W/proto.txt"
    "$BTRFS" receive --dump -f "$f" > "$W/progs.txt"
    if ! cmp "$W/progs.txt" "$W/proto.txt"; then
        echo "FAIL: dumps of $f differ (btrfs receive --dump vs proto-stream dump)" >&2
        exit 1
    fi
done
echo "dumps identical to btrfs receive --dump"
echo

# Times two commands (names $2, $4) in one hyperfine run; prints their
# mean times in seconds. $1: the run's name; extra hyperfine options after
# the four.
time2() {
    local name=$1 n1=$2 c1=$3 n2=$4 c2=$5
    shift 5
    # shellcheck disable=SC2086 # HYPERFINE_ARGS is a list of options
    hyperfine -N --warmup 2 --output=null --style=none \
        --export-json "$W/$name.json" "$@" ${HYPERFINE_ARGS:---min-runs 20} \
        -n "$n1" "$c1" -n "$n2" "$c2" >&2
    jq -r '[.results[] | .mean] | @tsv' "$W/$name.json"
}

RESULTS=()
MISSES=0
# label, measure (a number), target op (">=" or "<="), target, text
verdict() {
    local ok
    ok=$(awk -v m="$2" -v t="$4" -v op="$3" 'BEGIN { print ((op == ">=" ? m >= t : m <= t) ? "PASS" : "MISS") }')
    [ "$ok" = PASS ] || MISSES=$((MISSES + 1))
    RESULTS+=("$(printf '%-14s %6.2fx (target %s %sx)  %-4s  %s' "$1" "$2" "$3" "$4" "$ok" "$5")")
}
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1e3 }'; }

read -r peer proto < <(time2 verify-small btrfs_stream_decode "$PEER $SMALL" verify "$BIN verify $SMALL")
verdict "verify small" "$(awk -v a="$peer" -v b="$proto" 'BEGIN { print a / b }')" ">=" 5 \
    "btrfs_stream_decode $(ms "$peer") / verify $(ms "$proto")"

# What verify small cannot do without, beside the target: the process's
# start, and its decoding thread's work as the in-process bench
# small-files/proto-btrfs-verify-1m measured it (criterion's last run, when
# there is one); reading the file (cat) overlaps it on another thread.
read -r start catsmall < <(time2 verify-floor start "$BIN --version" cat "cat $SMALL")
EST=$TARGET/criterion/small-files/proto-btrfs-verify-1m/new/estimates.json
if [ -r "$EST" ]; then
    decode=$(jq -r '.mean.point_estimate / 1e9' "$EST")
    FLOOR=$(awk -v s="$start" -v d="$decode" -v p="$peer" -v c="$catsmall" 'BEGIN {
        printf "verify small with one decoding thread: start %.1f ms + decoding %.2f ms (proto-btrfs-verify-1m) = %.1f ms; 5x needs <= %.1f ms (cat of the file: %.1f ms, on the reader thread)", s * 1e3, d * 1e3, (s + d) * 1e3, p / 5 * 1e3, c * 1e3 }')
else
    FLOOR="verify small: no criterion estimate for small-files/proto-btrfs-verify-1m (cargo bench -p proto-stream-benches --bench decode -- small-files); start $(ms "$start"), cat of the file $(ms "$catsmall")"
fi

read -r progs proto < <(time2 dump-small btrfs-progs "$BTRFS receive --dump -f $SMALL" dump "$BIN dump $SMALL")
verdict "dump small" "$(awk -v a="$progs" -v b="$proto" 'BEGIN { print a / b }')" ">=" 6 \
    "btrfs receive --dump $(ms "$progs") / dump $(ms "$proto")"

read -r progs proto < <(time2 dump-big btrfs-progs "$BTRFS receive --dump -f $BIG" dump "$BIN dump $BIG")
verdict "dump big" "$(awk -v a="$progs" -v b="$proto" 'BEGIN { print a / b }')" ">=" 2 \
    "btrfs receive --dump $(ms "$progs") / dump $(ms "$proto")"

read -r cat proto < <(time2 verify-big cat "cat $BIG" verify "$BIN verify $BIG")
verdict "verify big" "$(awk -v a="$cat" -v b="$proto" 'BEGIN { print a / b }')" ">=" 0.9 \
    "cat $(ms "$cat") / verify $(ms "$proto")"

# split writes the same pieces over the last run's; chunk's directory is
# removed before each run.
mkdir -p "$SHM/s"
for f in "$BIG" "$SMALL"; do
    name=$(basename "$f" .stream)
    read -r split proto < <(time2 "chunk-$name" \
        split "split -b 1MiB $f $SHM/s/x" \
        chunk "$BIN chunk --buffer-size 1048576 --out-dir $SHM/c $f" \
        --prepare "rm -rf $SHM/c")
    verdict "chunk ${name%%-*}" "$(awk -v a="$proto" -v b="$split" 'BEGIN { print a / b }')" "<=" 1.3 \
        "chunk $(ms "$proto") / split -b 1MiB $(ms "$split")"
done

echo "== issue 14 whole-process targets (mean wall times; ratios within one hyperfine run)"
printf '%s\n' "${RESULTS[@]}"
echo "$MISSES target(s) missed"
echo "$FLOOR"
