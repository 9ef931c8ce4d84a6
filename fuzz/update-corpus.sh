#!/usr/bin/env bash
# Grows and minimizes the committed corpus of fuzz targets.
#
#   fuzz/update-corpus.sh TARGET SECONDS [TARGET SECONDS]...
#   SEED=1 fuzz/update-corpus.sh ...     (add seed-corpus.sh's seeds first)
#
# For each TARGET, one at a time:
# 1. with SEED=1, or when there is nothing to start from, adds the seeds of
#    seed-corpus.sh to fuzz/new-corpus/TARGET/;
# 2. fuzzes for SECONDS from fuzz/corpus/TARGET/ (the committed corpus) and
#    fuzz/new-corpus/TARGET/ (inputs earlier runs here found, run-smoke.sh's
#    included), new inputs going to the latter, with the -max_len of
#    targets.sh (SECONDS may be 0: only merge);
# 3. minimizes both into fuzz/corpus/TARGET/ with `cargo fuzz cmin` (a
#    libFuzzer -merge=1 with that -max_len: the smallest inputs that keep
#    every feature; inputs longer than -max_len are cut to it), then empties
#    fuzz/new-corpus/TARGET/;
# 4. prints the corpus before and after (inputs, KiB) and the coverage
#    (cov/ft) libFuzzer reports on loading each.
#
# Commit fuzz/corpus/TARGET/ afterwards (files are named by the SHA-1 of
# their content, so unchanged inputs keep their names). The toolchain is
# `nightly` unless FUZZ_TOOLCHAIN says otherwise.
set -euo pipefail

usage() { echo "usage: $0 TARGET SECONDS [TARGET SECONDS]..." >&2; exit 2; }
[ $# -ge 2 ] && [ $(($# % 2)) -eq 0 ] || usage

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$FUZZ_DIR"
# shellcheck source=targets.sh
. ./targets.sh
toolchain=${FUZZ_TOOLCHAIN:-nightly}
fuzz() { cargo "+$toolchain" fuzz "$@"; }
count() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }
kib() { find "$1" -maxdepth 1 -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {printf "%d", (s + 1023) / 1024}'; }
# The coverage libFuzzer reports once it has run the corpus in "$@".
coverage() {
    fuzz run "$target" "$@" -- -runs=0 -max_len="$max_len" -rss_limit_mb=2048 2>&1 |
        grep -m1 -E '^#[0-9]+[[:space:]]+INITED' |
        sed -E 's/^#[0-9]+[[:space:]]+INITED[[:space:]]*//; s/[[:space:]]*(exec\/s|rss):.*//' || true
}

args=("$@")
for ((i = 0; i < ${#args[@]}; i += 2)); do
    target=${args[i]}
    secs=${args[i + 1]}
    case $secs in '' | *[!0-9]*) usage ;; esac
    if ! fuzz_max_len "$target"; then
        echo "$0: unknown target $target (${FUZZ_ALL_TARGETS[*]})" >&2
        exit 2
    fi
    committed=corpus/$target
    new=new-corpus/$target
    mkdir -p "$committed" "$new"
    if [ "${SEED:-0}" = 1 ] || { [ "$(count "$committed")" -eq 0 ] && [ "$(count "$new")" -eq 0 ]; }; then
        CORPUS=$FUZZ_DIR/new-corpus ./seed-corpus.sh "$target"
    fi
    fuzz build "$target"
    before="$(count "$committed") inputs, $(kib "$committed") KiB: $(coverage "$committed")"

    if [ "$secs" -gt 0 ]; then
        echo "update-corpus: fuzzing $target for ${secs}s (-max_len=$max_len)" >&2
        log=$(mktemp)
        rc=0
        fuzz run "$target" "$new" "$committed" -- \
            -max_total_time="$secs" -max_len="$max_len" -rss_limit_mb=2048 \
            -timeout=60 -print_final_stats=1 >"$log" 2>&1 || rc=$?
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" || true
        if [ "$rc" -ne 0 ]; then
            tail -n 40 "$log"
            echo "update-corpus: $target failed (the input is in fuzz/artifacts/$target/; nothing merged)" >&2
            rm -f "$log"
            exit "$rc"
        fi
        rm -f "$log"
    fi

    # cmin minimizes one directory in place: gather both there first.
    find "$new" -maxdepth 1 -type f -exec cp -n -t "$committed" {} +
    fuzz cmin "$target" "$committed" -- -max_len="$max_len" -rss_limit_mb=2048 -timeout=60 2>&1 |
        { grep -E '^MERGE-OUTER: [0-9]+ new files' || true; }
    find "$new" -maxdepth 1 -type f -delete
    after="$(count "$committed") inputs, $(kib "$committed") KiB: $(coverage "$committed")"
    echo "update-corpus: $target: before: $before"
    echo "update-corpus: $target: after:  $after"
done
