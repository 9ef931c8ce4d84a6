#!/usr/bin/env bash
# The time a transfer takes to finish after a kill, against a whole
# transfer (issue 12, item 7): `proto-stream send --listen` and
# `proto-stream receive --from tcp://...` over loopback; one side killed
# with SIGKILL once OUT.part holds 10%, 50% and 90% of the stream, and
# started again with the same command. Prints each time and its ratio to
# the whole transfer, with the target (after a kill at 90%: at most 0.2 of
# a whole transfer).
#
#   benches/resume.sh [SIZE_MIB]                # a file source, the receiver killed
#   KILL=sender benches/resume.sh [SIZE_MIB]    # the sender killed: it re-arms from
#                                               # the receiver's token (by seeking)
#   SOURCE=btrfs benches/resume.sh [SIZE_MIB]   # a live `send --btrfs` of a snapshot on
#                                               # a loop-mounted btrfs (root), the sender
#                                               # killed: it runs btrfs send again and
#                                               # walks it to the token
# SIZE_MIB defaults to 1024 (a 1 GiB stream); it needs about twice that in
# the temporary directory (three times with SOURCE=btrfs).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
kill_side=${KILL:-receiver}
source_kind=${SOURCE:-file}
[ "$source_kind" = btrfs ] && kill_side=sender
cargo build -q --release -p proto-stream-cli
cargo build -q --release -p proto-stream --example make_big_native
B=target/release/proto-stream
T=$(mktemp -d)
MNT=$T/mnt
cleanup() {
  pkill -f "$T" 2>/dev/null || true
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || umount -l "$MNT"; fi
  rm -rf "$T"
}
trap cleanup EXIT
if [ "$source_kind" = btrfs ]; then
  mkdir -p "$MNT"
  truncate -s $(( size * 2 + 512 ))M "$T/fs.img"
  mkfs.btrfs -q "$T/fs.img" > /dev/null
  mount -o loop "$T/fs.img" "$MNT"
  btrfs -q subvolume create "$MNT/vol"
  for i in $(seq $(( size / 64 ))); do head -c 64M /dev/urandom > "$MNT/vol/f$i"; done
  sync
  btrfs -q subvolume snapshot -r "$MNT/vol" "$MNT/snap"
  src=$T/reference.stream
  btrfs -q send -f "$src" "$MNT/snap"
  send_args=(--btrfs "$MNT/snap")
else
  src=$T/src.stream
  target/release/examples/make_big_native "$size" "$src"
  send_args=("$src")
fi
total=$(stat -c %s "$src")
# The source just written is still being written back: that would compete
# with the receiver's fsyncs in every timed run.
sync
now() { date +%s.%N; }

# Starts a sender listening on ADDR (127.0.0.1:0 the first time); prints
# its address.
start_sender() {
  local log=$1 listen=$2
  "$B" send "${send_args[@]}" --listen "$listen" > "$log" 2>&1 &
  echo $! > "$log.pid"
  local addr=""
  for _ in $(seq 400); do
    addr=$(sed -n 's/^listening on //p' "$log")
    [ -n "$addr" ] && break
    sleep 0.05
  done
  echo "$addr"
}

# One transfer, a side killed at FRACTION (0: never); prints the time from
# the restart (or from the start) to the end.
run() {
  local frac=$1 out=$T/out-$1.stream log=$T/send-$1.log
  rm -f "$out" "$out".part* "$T"/out-*.stream
  sync
  local addr; addr=$(start_sender "$log" 127.0.0.1:0)
  local t0
  if [ "$frac" = 0 ]; then
    t0=$(now)
    "$B" receive "$out" --from "tcp://$addr" > /dev/null 2>&1
  else
    "$B" receive "$out" --from "tcp://$addr" --retry-for 120 > /dev/null 2>&1 &
    local rpid=$!
    local at=$(( total * frac / 100 ))
    while [ "$(stat -c %s "$out.part" 2>/dev/null || echo 0)" -lt "$at" ]; do
      kill -0 $rpid 2>/dev/null || break
      sleep 0.001
    done
    if [ "$kill_side" = sender ]; then
      kill -9 "$(cat "$log.pid")"
      sync
      t0=$(now)
      start_sender "$log.2" "$addr" > /dev/null
      wait $rpid
    else
      kill -9 $rpid 2>/dev/null || true
      wait $rpid 2>/dev/null || true
      # (What the killed receiver had not acknowledged is not waited for by
      # the next one; the sync only keeps other write-back out of the time.)
      sync
      t0=$(now)
      "$B" receive "$out" --from "tcp://$addr" > /dev/null 2>&1
    fi
  fi
  local t1; t1=$(now)
  for p in "$log.pid" "$log.2.pid"; do [ -f "$p" ] && wait "$(cat "$p")" 2>/dev/null || true; done
  cmp -s "$src" "$out" || { echo "resume.sh: $out differs from the stream" >&2; exit 1; }
  echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}'
}

# The median of three runs (the disk's write-back makes single runs noisy).
median() {
  local a b c
  a=$(run "$1"); b=$(run "$1"); c=$(run "$1")
  printf '%s\n%s\n%s\n' "$a" "$b" "$c" | sort -n | sed -n 2p
}

echo "source: $source_kind, $((total / 1048576)) MiB; killed: the $kill_side; medians of 3 runs"
full=$(median 0)
printf 'whole transfer: %s s\n' "$full"
for p in 10 50 90; do
  t=$(median $p)
  ratio=$(echo "$t $full" | awk '{printf "%.3f", $1 / $2}')
  want=$(echo "$p" | awk '{printf "%.2f", (100 - $1) / 100 + 0.1}')
  [ "$p" = 90 ] && want=0.20
  verdict=$(echo "$ratio $want" | awk '{print ($1 <= $2) ? "PASS" : "MISS"}')
  printf 'killed at %2d%%: finished %s s after the restart = %s x a whole transfer (target <= %s) %s\n' "$p" "$t" "$ratio" "$want" "$verdict"
done
