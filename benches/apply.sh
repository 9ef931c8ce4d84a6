#!/usr/bin/env bash
# `proto-stream apply` against `btrfs receive` (issue 13, item 7): the perf
# streams (scripts/mkperf.sh: big-v2, 4 x 128 MiB files; small-v2, 40,000
# small files with xattrs, 281,005 commands) received into the same btrfs
# loop mount, alternately, three runs each; prints the medians and
# receive/apply (above 1: apply is faster). Both are timed to durable:
# apply ends with a syncfs, so `btrfs receive` is followed by `sync`.
# Target: apply at least as fast on both streams.
#
#   benches/apply.sh [PERF_DIR]     # default $PROTO_STREAM_PERF_DIR, else <workspace>/perf
#   STREAMS="small-v2" benches/apply.sh
#
# Needs root, loop devices and btrfs-progs; makes the perf streams with
# scripts/mkperf.sh when they are missing (about a minute, ~1.2 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
perf=${1:-${PROTO_STREAM_PERF_DIR:-perf}}
streams=${STREAMS:-small-v2 big-v2}
runs=${RUNS:-3}
for s in $streams; do
  [ -f "$perf/$s.stream" ] || { scripts/mkperf.sh "$perf"; break; }
done
cargo build -q --release -p proto-stream-cli
B=$PWD/target/release/proto-stream
T=$(mktemp -d)
MNT=$T/mnt
cleanup() {
  cd /
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || umount -l "$MNT"; fi
  rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$MNT"
truncate -s 4G "$T/fs.img"
mkfs.btrfs -q "$T/fs.img" > /dev/null
mount -o loop "$T/fs.img" "$MNT"
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
# Removes what a run made (not timed).
clear_runs() {
  for sv in "$MNT"/r/*/; do
    [ -d "$sv" ] || continue
    btrfs property set -f -ts "$sv" ro false 2>/dev/null || true
    btrfs -q subvolume delete "$sv" 2>/dev/null || true
  done
  rm -rf "$MNT/r" "$MNT/a"
  btrfs filesystem sync "$MNT" >/dev/null
  sync
}
printf '%-10s %12s %12s %16s\n' stream "receive s" "apply s" "receive/apply"
for s in $streams; do
  f=$perf/$s.stream
  cat "$f" > /dev/null   # page cache warm for both
  rs=(); as=()
  for i in $(seq "$runs"); do
    clear_runs
    mkdir -p "$MNT/r"
    t0=$(now); btrfs receive -q -f "$f" "$MNT/r" 2>/dev/null || btrfs receive -f "$f" "$MNT/r" > /dev/null; sync; t1=$(now)
    rs+=("$(echo "$t1 - $t0" | bc -l)")
    clear_runs
    mkdir -p "$MNT/a"
    t0=$(now); "$B" apply "$f" "$MNT/a" 2>/dev/null; t1=$(now)
    as+=("$(echo "$t1 - $t0" | bc -l)")
  done
  r=$(printf '%s\n' "${rs[@]}" | median)
  a=$(printf '%s\n' "${as[@]}" | median)
  ratio=$(echo "$r / $a" | bc -l)
  verdict=$(echo "$ratio >= 1" | bc -l)
  printf '%-10s %12.3f %12.3f %15.2fx %s   (runs: receive %s; apply %s)\n' "$s" "$r" "$a" "$ratio" \
    "$([ "$verdict" = 1 ] && echo PASS || echo MISS)" "${rs[*]}" "${as[*]}"
done
