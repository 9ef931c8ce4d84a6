#!/usr/bin/env bash
# Big real btrfs send streams for throughput measurements (benches/README.md).
#
# usage: scripts/mkperf.sh OUTDIR     (the benches read <workspace>/perf, gitignored,
#                                      or $PROTO_STREAM_PERF_DIR)
#   big-v2.stream   4 files x 128 MiB of /dev/urandom, --proto 2 (536,994,852 bytes)
#   big-v1.stream   the same with --proto 1
#   small-v2.stream 40,000 files of 64..964 bytes in 200 directories, each with
#                   a user.tag xattr (32,657,210 bytes, 281,005 commands)
#
# Needs root, loop devices, btrfs-progs and python3; takes about a minute and
# ~1.2 GB in OUTDIR. The byte counts above do not depend on the random data;
# benches/src/lib.rs builds a synthetic small-v2 with exactly the same paths,
# sizes and command counts, so keep the layout as it is.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
for tool in btrfs mkfs.btrfs mount umount python3; do
  command -v "$tool" >/dev/null || { echo "$0: $tool missing" >&2; exit 1; }
done
OUT=$(realpath -m "$1"); mkdir -p "$OUT"
W=$(mktemp -d); IMG=$W/fs.img; MNT=$W/mnt; mkdir -p "$MNT"
truncate -s 4G "$IMG"; mkfs.btrfs -q "$IMG" >/dev/null 2>&1
mount -o loop "$IMG" "$MNT"
trap 'cd /; sync; umount "$MNT" || umount -l "$MNT"; rm -rf "$W"' EXIT
cd "$MNT"
btrfs -q subvolume create big; btrfs -q subvolume create small
for i in 1 2 3 4; do head -c 128M /dev/urandom > big/f$i; done
python3 - <<'PY'
import os
for d in range(200):
    p=f"small/d{d}"; os.mkdir(p)
    for f in range(200):
        with open(f"{p}/f{f}","wb") as fh: fh.write(os.urandom(64 + (f*37)%900))
        os.setxattr(f"{p}/f{f}", "user.tag", b"v%d" % f)
PY
sync
btrfs -q subvolume snapshot -r big big.s; btrfs -q subvolume snapshot -r small small.s
btrfs -q send --proto 2 -f "$OUT/big-v2.stream" big.s
btrfs -q send --proto 1 -f "$OUT/big-v1.stream" big.s
btrfs -q send --proto 2 -f "$OUT/small-v2.stream" small.s
ls -la "$OUT"
