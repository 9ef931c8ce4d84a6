#!/usr/bin/env bash
# CI smoke run of one fuzz target.
#
#   fuzz/run-smoke.sh TARGET SECONDS [LIBFUZZER_FLAG...]
#
# 1. seeds fuzz/corpus/TARGET from the fixture streams if it is empty;
# 2. replays every saved crash input in fuzz/regressions/TARGET/ (each must
#    now pass);
# 3. fuzzes for SECONDS with -rss_limit_mb=2048 and a -max_len suited to the
#    target (1 MiB for the byte-stream targets).
#
# Exits non-zero on a build failure, a crash, a failed property, a leak, an
# out-of-memory or a timeout; the failing input is left in
# fuzz/artifacts/TARGET/. The toolchain is `nightly` unless FUZZ_TOOLCHAIN
# says otherwise.
set -euo pipefail

usage() { echo "usage: $0 TARGET SECONDS [LIBFUZZER_FLAG...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
target=$1
secs=$2
shift 2
case $secs in '' | *[!0-9]*) usage ;; esac
case $target in
tlv_decode | btrfs_dump) max_len=1048576 ;;
# Structured input; values are inflated past 64 KiB by the target itself.
tlv_roundtrip) max_len=65536 ;;
# Headers, negotiation inputs and selections are small.
header_fixed | header_version | header_negotiate | header_contexts) max_len=4096 ;;
native_reader) max_len=65536 ;;
*) echo "$0: unknown target $target (tlv_decode, tlv_roundtrip, btrfs_dump, header_fixed, header_version, header_negotiate, header_contexts, native_reader)" >&2; exit 2 ;;
esac

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$FUZZ_DIR"
toolchain=${FUZZ_TOOLCHAIN:-nightly}
fuzz() { cargo "+$toolchain" fuzz "$@"; }

corpus=corpus/$target
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    ./seed-corpus.sh "$target"
fi

fuzz build "$target"

shopt -s nullglob
regressions=(regressions/"$target"/*)
if [ ${#regressions[@]} -gt 0 ]; then
    echo "run-smoke: replaying ${#regressions[@]} regression input(s) for $target" >&2
    fuzz run "$target" "${regressions[@]}" -- -rss_limit_mb=2048 -runs=1
fi

echo "run-smoke: fuzzing $target for ${secs}s" >&2
fuzz run "$target" "$corpus" -- \
    -max_total_time="$secs" \
    -rss_limit_mb=2048 \
    -max_len="$max_len" \
    -timeout=60 \
    -print_final_stats=1 \
    "$@"
