#!/usr/bin/env bash
# The time a transfer takes to finish after a kill, against a whole
# transfer (issue 12, item 7): `proto-stream send FILE --listen` and
# `proto-stream receive OUT --from tcp://...` over loopback, the receiver
# killed with SIGKILL once OUT.part holds 10%, 50% and 90% of the stream and
# started again; the sender keeps its window (resume by seq). Prints each
# time and its ratio to the whole transfer, with the target (after a kill
# at 90%: at most 0.2 of a whole transfer).
#
#   benches/resume.sh [SIZE_MIB]     # default 1024 (a 1 GiB stream); needs
#                                    # twice that in the temporary directory
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
cargo build -q --release -p proto-stream-cli
cargo build -q --release -p proto-stream --example make_big_native
B=target/release/proto-stream
T=$(mktemp -d)
trap 'pkill -f "$T" 2>/dev/null || true; rm -rf "$T"' EXIT
src=$T/src.stream
target/release/examples/make_big_native "$size" "$src"
total=$(stat -c %s "$src")
now() { date +%s.%N; }

# One transfer: a sender, a receiver killed at FRACTION (0: never), then the
# time the receiver run again takes to finish (or the whole run's time).
run() {
  local frac=$1 out=$T/out-$1.stream
  rm -f "$out" "$out".part*
  "$B" send "$src" --listen 127.0.0.1:0 > "$T/send-$frac.log" 2>&1 &
  local spid=$!
  local addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening on //p' "$T/send-$frac.log")
    [ -n "$addr" ] && break
    sleep 0.05
  done
  if [ "$frac" != 0 ]; then
    "$B" receive "$out" --from "tcp://$addr" > /dev/null 2>&1 &
    local rpid=$!
    local at=$(( total * frac / 100 ))
    while [ "$(stat -c %s "$out.part" 2>/dev/null || echo 0)" -lt "$at" ]; do
      kill -0 $rpid 2>/dev/null || break
      sleep 0.001
    done
    kill -9 $rpid 2>/dev/null || true
    wait $rpid 2>/dev/null || true
  fi
  local t0; t0=$(now)
  "$B" receive "$out" --from "tcp://$addr" > /dev/null
  local t1; t1=$(now)
  wait $spid
  cmp -s "$src" "$out" || { echo "resume.sh: $out differs" >&2; exit 1; }
  echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}'
}

full=$(run 0)
printf 'whole transfer of %s MiB: %s s\n' "$size" "$full"
for p in 10 50 90; do
  t=$(run $p)
  ratio=$(echo "$t $full" | awk '{printf "%.3f", $1 / $2}')
  want=$(echo "$p" | awk '{printf "%.2f", (100 - $1) / 100 + 0.1}')
  [ "$p" = 90 ] && want=0.20
  verdict=$(echo "$ratio $want" | awk '{print ($1 <= $2) ? "PASS" : "MISS"}')
  printf 'killed at %2d%%: finished in %s s after the restart = %s x a whole transfer (target <= %s) %s\n' "$p" "$t" "$ratio" "$want" "$verdict"
done
