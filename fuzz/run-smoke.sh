#!/usr/bin/env bash
# CI smoke run of one fuzz target.
#
#   fuzz/run-smoke.sh TARGET SECONDS [LIBFUZZER_FLAG...]
#
# 1. replays every saved crash input in fuzz/regressions/TARGET/ (each must
#    now pass);
# 2. fuzzes for SECONDS with -rss_limit_mb=2048 and a -max_len suited to the
#    target (targets.sh), starting from the committed corpus
#    fuzz/corpus/TARGET/. New inputs go to fuzz/new-corpus/TARGET/ (not
#    committed; kept and read again by later runs here, folded into the
#    committed corpus by update-corpus.sh), so the checkout stays clean.
#    Only when there is no committed corpus for TARGET (and nothing in
#    new-corpus/) is new-corpus/TARGET/ seeded with seed-corpus.sh;
# 3. prints a summary: the corpus at the start, the coverage libFuzzer
#    reports once it has run that corpus (INITED cov/ft) and at the end
#    (DONE), the executions and executions per second.
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

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$FUZZ_DIR"
# shellcheck source=targets.sh
. ./targets.sh
if ! fuzz_max_len "$target"; then
    echo "$0: unknown target $target (${FUZZ_ALL_TARGETS[*]})" >&2
    exit 2
fi
toolchain=${FUZZ_TOOLCHAIN:-nightly}
fuzz() { cargo "+$toolchain" fuzz "$@"; }

committed=corpus/$target
new=new-corpus/$target
mkdir -p "$new"
count() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }
if [ "$(count "$committed")" -eq 0 ] && [ "$(count "$new")" -eq 0 ]; then
    echo "run-smoke: no committed corpus for $target: seeding $new" >&2
    CORPUS=$FUZZ_DIR/new-corpus ./seed-corpus.sh "$target"
fi
corpora=("$new")
[ -d "$committed" ] && corpora+=("$committed")

fuzz build "$target"

shopt -s nullglob
regressions=(regressions/"$target"/*)
if [ ${#regressions[@]} -gt 0 ]; then
    echo "run-smoke: replaying ${#regressions[@]} regression input(s) for $target" >&2
    fuzz run "$target" "${regressions[@]}" -- -rss_limit_mb=2048 -runs=1
fi

kib() { find "$1" -maxdepth 1 -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {printf "%d", (s + 1023) / 1024}'; }
start_committed=$(count "$committed")
start_new=$(count "$new")
echo "run-smoke: $target: corpus at start: $start_committed committed input(s) ($(kib "$committed") KiB) + $start_new in $new"
echo "run-smoke: fuzzing $target for ${secs}s (-max_len=$max_len)" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# libFuzzer writes new inputs into the first directory only.
set +e
fuzz run "$target" "${corpora[@]}" -- \
    -max_total_time="$secs" \
    -rss_limit_mb=2048 \
    -max_len="$max_len" \
    -timeout=60 \
    -print_final_stats=1 \
    "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# "#N<tab>INITED cov: C ft: F corp: N/SIZE exec/s: E rss: R" -> "cov: C ft: F corp: N/SIZE"
cov() { grep -m1 -E "^#[0-9]+[[:space:]]+$1" "$log" | sed -E "s/^#[0-9]+[[:space:]]+$1[[:space:]]*//; s/[[:space:]]*(lim|exec\/s|rss):.*//"; }
fstat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
inited=$(cov INITED)
done_=$(cov DONE)
echo "run-smoke: $target: inited ${inited:-(no INITED line)}; final ${done_:-(no DONE line)}"
runs=$(fstat number_of_executed_units)
secs_run=$(sed -nE 's/^Done [0-9]+ runs in ([0-9]+) second.*/\1/p' "$log" | tail -n 1)
echo "run-smoke: $target: ${runs:-?} executions in ${secs_run:-?} s, $(fstat average_exec_per_sec || true) exec/s; $(fstat new_units_added || true) new input(s), $(count "$new") in $new"
exit "$rc"
