#!/usr/bin/env bash
# Prints the throughput of every bench of the last `cargo bench -p
# proto-stream-benches` run (criterion's saved estimates) and the ratios the
# README tracks. Every bench of a group measures the same input, so a
# throughput ratio is the inverse ratio of the mean times.
#
# usage: benches/ratios.sh   (after cargo bench -p proto-stream-benches)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRIT=${CARGO_TARGET_DIR:-$ROOT/target}/criterion
command -v jq >/dev/null || { echo "jq not found" >&2; exit 1; }
[ -d "$CRIT" ] || { echo "no criterion results in $CRIT: run cargo bench -p proto-stream-benches" >&2; exit 1; }

# mean time in ns of GROUP/NAME, or empty
mean() {
    local f=$CRIT/$1/$2/new/estimates.json
    [ -r "$f" ] && jq -r '.mean.point_estimate' "$f" || true
}

for group in large-data small-files; do
    [ -d "$CRIT/$group" ] || continue
    echo "== $group"
    for dir in "$CRIT/$group"/*/; do
        name=$(basename "$dir")
        [ -r "$dir/new/benchmark.json" ] || continue
        t=$(mean "$group" "$name")
        jq -r --arg t "$t" --arg n "$name" '
            .throughput as $tp | ($t | tonumber) as $ns
            | if $tp.Bytes then "\($n)\t\($ns / 1e6 * 1000 | round / 1000) ms\t\($tp.Bytes / $ns * 1e9 / 1073741824 * 100 | round / 100) GiB/s"
              else "\($n)\t\($ns / 1e6 * 1000 | round / 1000) ms\t\($tp.Elements / $ns * 1e3 * 100 | round / 100) M commands/s" end' \
            "$dir/new/benchmark.json"
    done | column -t -s $'\t'
done

ratio() { # label, group, numerator bench (faster = higher), denominator bench
    local a b
    a=$(mean "$2" "$3"); b=$(mean "$2" "$4")
    if [ -n "$a" ] && [ -n "$b" ]; then
        awk -v l="$1" -v a="$a" -v b="$b" 'BEGIN { printf "%-58s %6.2f\n", l, b / a }'
    fi
}
echo "== ratios (throughput of the first / throughput of the second)"
ratio "large-data: proto-btrfs-commands / crc32c (target >= 0.85)" large-data proto-btrfs-commands crc32c
ratio "large-data: proto-btrfs-reader / crc32c" large-data proto-btrfs-reader crc32c
ratio "large-data: proto-btrfs-decoder-256k / crc32c" large-data proto-btrfs-decoder-256k crc32c
ratio "large-data: proto-btrfs-commands / btrfs-stream" large-data proto-btrfs-commands btrfs-stream
ratio "large-data: proto-btrfs-reader / btrfs-stream" large-data proto-btrfs-reader btrfs-stream
ratio "small-files: proto-btrfs-commands / btrfs-stream (target >= 4)" small-files proto-btrfs-commands btrfs-stream
ratio "small-files: proto-btrfs-typed / btrfs-stream" small-files proto-btrfs-typed btrfs-stream
ratio "small-files: proto-btrfs-reader / btrfs-stream" small-files proto-btrfs-reader btrfs-stream
ratio "small-files: proto-btrfs-reader-typed / btrfs-stream" small-files proto-btrfs-reader-typed btrfs-stream
ratio "small-files: proto-btrfs-decoder-256k / btrfs-stream" small-files proto-btrfs-decoder-256k btrfs-stream
