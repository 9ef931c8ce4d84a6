#!/usr/bin/env bash
# `proto-stream dump` (release build) against `btrfs receive --dump`
# (btrfs-progs 6.2) on the perf streams, with `cat FILE` as the floor.
#
# usage: benches/dump-vs-progs.sh [STREAM...]
#   default streams: $PROTO_STREAM_PERF_DIR/{small-v2,big-v2}.stream
#   (PROTO_STREAM_PERF_DIR defaults to <workspace>/perf; make them with
#   scripts/mkperf.sh). HYPERFINE_ARGS adds hyperfine options
#   (e.g. "--runs 20").
#
# For each stream: checks that both dumps are byte-identical (TZ=UTC), then
# times the three commands with hyperfine (stdout to /dev/null, no shell,
# one warm-up run so the file is in the page cache) and prints the ratios.
set -euo pipefail
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

(cd "$ROOT" && cargo build --quiet --release -p proto-stream-cli)

if [ $# -gt 0 ]; then
    STREAMS=("$@")
else
    STREAMS=("$PERF/small-v2.stream" "$PERF/big-v2.stream")
fi

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

echo "btrfs-progs: $("$BTRFS" --version)"
echo "proto-stream: $("$BIN" --version) ($BIN)"
echo "hyperfine: $(hyperfine --version); $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

SUMMARY=()
for f in "${STREAMS[@]}"; do
    if [ ! -r "$f" ]; then
        echo "skip: $f not found (run scripts/mkperf.sh $PERF as root)" >&2
        continue
    fi
    name=$(basename "$f" .stream)
    size=$(stat -c %s "$f")

    # Same output, byte for byte, before anything is timed.
    "$BIN" dump "$f" > "$W/proto.txt"
    "$BTRFS" receive --dump -f "$f" > "$W/progs.txt"
    if ! cmp "$W/progs.txt" "$W/proto.txt"; then
        echo "FAIL: dumps of $f differ (btrfs receive --dump vs proto-stream dump)" >&2
        exit 1
    fi
    lines=$(wc -l < "$W/proto.txt")
    echo "== $name: $size bytes, $lines dump lines, dumps identical"

    # shellcheck disable=SC2086 # HYPERFINE_ARGS is a list of options
    hyperfine -N --warmup 1 --min-runs 10 --output=null --style=basic \
        --export-json "$W/$name.json" ${HYPERFINE_ARGS:-} \
        -n cat "cat $f" \
        -n proto-stream "$BIN dump $f" \
        -n btrfs-progs "$BTRFS receive --dump -f $f"

    read -r cat proto progs < <(jq -r '[.results[] | .mean] | @tsv' "$W/$name.json")
    line=$(awk -v n="$name" -v c="$cat" -v p="$proto" -v b="$progs" 'BEGIN {
        printf "%-10s cat %8.1f ms | proto-stream %8.1f ms | btrfs-progs %8.1f ms | progs/proto %5.2fx | proto/cat %5.2fx",
            n, c * 1e3, p * 1e3, b * 1e3, b / p, p / c }')
    SUMMARY+=("$line")
    echo
done

echo "== summary (mean wall time; target progs/proto >= 3 small, >= 2 large)"
printf '%s\n' "${SUMMARY[@]}"
