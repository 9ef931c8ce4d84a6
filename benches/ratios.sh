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

for group in large-data small-files crc-commands crc-bulk crc-copy-64k emit-64k emit-64k-small session session-small; do
    [ -d "$CRIT/$group" ] || continue
    echo "== $group"
    for dir in "$CRIT/$group"/*/; do
        name=$(basename "$dir")
        [ -r "$dir/new/benchmark.json" ] || continue
        t=$(mean "$group" "$name")
        jq -r --arg t "$t" --arg n "$name" '
            .throughput as $tp | ($t | tonumber) as $ns
            | if $tp == null then "\($n)\t\($ns / 1e3 * 100 | round / 100) µs"
              elif $tp.Bytes then "\($n)\t\($ns / 1e6 * 1000 | round / 1000) ms\t\($tp.Bytes / $ns * 1e9 / 1073741824 * 100 | round / 100) GiB/s"
              else "\($n)\t\($ns / 1e6 * 1000 | round / 1000) ms\t\($tp.Elements / $ns * 1e3 * 100 | round / 100) M commands/s" end' \
            "$dir/new/benchmark.json"
    done | column -t -s $'\t'
done

MISSES=0
# Prints a ratio, and with a target (">= 6", "<= 1.3") PASS or MISS beside it.
show() { # label, value, [op target]
    if [ $# -ge 4 ]; then
        local v
        v=$(awk -v m="$2" -v t="$4" -v op="$3" 'BEGIN { print ((op == ">=" ? m >= t : m <= t) ? "PASS" : "MISS") }')
        [ "$v" = PASS ] || MISSES=$((MISSES + 1))
        printf '%-62s %6.2f  (target %s %s) %s\n' "$1" "$2" "$3" "$4" "$v"
    else
        printf '%-62s %6.2f\n' "$1" "$2"
    fi
}
ratio() { # label, group, numerator bench (faster = higher), denominator bench, [op target]
    local a b
    a=$(mean "$2" "$3"); b=$(mean "$2" "$4")
    if [ -n "$a" ] && [ -n "$b" ]; then
        show "$1" "$(awk -v a="$a" -v b="$b" 'BEGIN { print b / a }')" "${@:5}"
    fi
}
echo "== ratios (throughput of the first / throughput of the second)"
ratio "large-data: proto-btrfs-commands / crc32c" large-data proto-btrfs-commands crc32c ">=" 0.95
ratio "large-data: proto-crc32c / crc32c" large-data proto-crc32c crc32c
ratio "large-data: proto-btrfs-reader / crc32c" large-data proto-btrfs-reader crc32c
ratio "large-data: proto-btrfs-decoder-256k / crc32c" large-data proto-btrfs-decoder-256k crc32c
ratio "large-data: proto-btrfs-commands / btrfs-stream" large-data proto-btrfs-commands btrfs-stream
ratio "large-data: proto-btrfs-reader / btrfs-stream" large-data proto-btrfs-reader btrfs-stream
ratio "small-files: proto-btrfs-commands / btrfs-stream" small-files proto-btrfs-commands btrfs-stream ">=" 6
ratio "small-files: proto-btrfs-typed / btrfs-stream" small-files proto-btrfs-typed btrfs-stream
ratio "small-files: proto-btrfs-reader / btrfs-stream" small-files proto-btrfs-reader btrfs-stream
ratio "small-files: proto-btrfs-reader-typed / btrfs-stream" small-files proto-btrfs-reader-typed btrfs-stream
ratio "small-files: proto-btrfs-decoder-256k / btrfs-stream" small-files proto-btrfs-decoder-256k btrfs-stream
ratio "small-files: proto-btrfs-verify-1m / btrfs-stream (verify's decoding thread)" small-files proto-btrfs-verify-1m btrfs-stream
ratio "crc-commands: proto-crc32c-append2 / crc32c-append-x2" crc-commands proto-crc32c-append2 crc32c-append-x2
ratio "crc-commands: proto-crc32c-append2 / crc32c-one-call" crc-commands proto-crc32c-append2 crc32c-one-call
ratio "crc-commands: proto-crc32c-command / crc32c-append-x2" crc-commands proto-crc32c-command crc32c-append-x2
ratio "crc-commands: proto-crc32c-command / proto-crc32c-append2" crc-commands proto-crc32c-command proto-crc32c-append2
ratio "crc-bulk: proto-crc32c / crc32c" crc-bulk proto-crc32c crc32c
# criterion stores "session/loopback" as the directory session/loopback.
ratio "session: loopback (serve -> fetch) / plain-copy, large stream" session loopback plain-copy ">=" 0.9
ratio "session-small: loopback / plain-copy, small files" session-small loopback plain-copy ">=" 0.7
# The resend figures come from the replay API, written by the bench (not
# criterion estimates).
if [ -r "$CRIT/session/resend-figures.txt" ]; then
    echo "== session/resend (from the last run of the session bench)"
    cat "$CRIT/session/resend-figures.txt"
fi

# Time ratios (the first's mean time / the second's; lower is faster).
tratio() { # label, group, bench, peer bench
    local a b
    a=$(mean "$2" "$3"); b=$(mean "$2" "$4")
    if [ -n "$a" ] && [ -n "$b" ]; then
        show "$1" "$(awk -v a="$a" -v b="$b" 'BEGIN { print a / b }')" "${@:5}"
    fi
}
if [ -d "$CRIT/rearm" ]; then
    echo "== rearm (mean times)"
    # criterion stores "safe-every-1/10%" as the directory safe-every-1_10%.
    for dir in "$CRIT/rearm"/*/; do
        [ -r "$dir/new/estimates.json" ] || continue
        printf '%s\t%s µs\n' "$(basename "$dir")" "$(jq -r '.mean.point_estimate / 1000 * 100 | round / 100' "$dir/new/estimates.json")"
    done | column -t -s $'\t'
fi
echo "== time ratios (mean time of the first / mean time of the second)"
tratio "crc-copy-64k: proto-crc32c-fused / plain-copy" crc-copy-64k proto-crc32c-fused plain-copy
tratio "crc-copy-64k: copy+crc32c / plain-copy" crc-copy-64k copy+crc32c plain-copy
tratio "emit-64k: emitter / plain-copy" emit-64k emitter plain-copy "<=" 1.3
tratio "emit-64k: emitter / copy+crc32c" emit-64k emitter copy+crc32c
tratio "emit-64k: copy+crc32c / plain-copy (the floor with crc32c)" emit-64k copy+crc32c plain-copy
tratio "emit-64k-small: emitter / plain-copy" emit-64k-small emitter plain-copy
tratio "emit-64k-small: emitter / copy+crc32c" emit-64k-small emitter copy+crc32c
tratio "rearm: 90% / 10%, safe every 1" rearm safe-every-1_90% safe-every-1_10% "<=" 1.2
tratio "rearm: 90% / 10%, safe every 64" rearm safe-every-64_90% safe-every-64_10% "<=" 1.2
tratio "rearm+first fill: 90% / 10%, safe every 1" rearm safe-every-1+fill_90% safe-every-1+fill_10%
tratio "rearm+first fill: 90% / 10%, safe every 64" rearm safe-every-64+fill_90% safe-every-64+fill_10%
tratio "replay to 10% / rearm at 10% (what re-arming saves)" rearm replay-to-10% safe-every-1_10%
echo "== $MISSES target(s) missed (of those measured in the last run)"
