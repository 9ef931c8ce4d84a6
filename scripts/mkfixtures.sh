#!/usr/bin/env bash
# Makes a small set of REAL kernel btrfs send streams, the reference output
# of `btrfs receive --dump` for each, and listings of the trees they
# describe: the set shipped in testdata/btrfs/small/ (see
# testdata/btrfs/README.md), which the end-to-end checks against the real
# `btrfs receive` use.
#
# usage: scripts/mkfixtures.sh OUTDIR
#   COMPRESS=zstd (the default) mounts the source filesystem compressed and
#   adds compressed-v2 (`--compressed-data`: encoded_write commands);
#   COMPRESS= leaves both out.
#
# Needs root, loop devices and btrfs-progs (the shipped dumps were made with
# btrfs-progs 6.2, the streams by Linux 6.18). The dumps print times in
# local time, so this script sets TZ=UTC.
#
# The tree (every path of it is named by some test, so keep them):
#   snap1: docs/{hello.txt (xattr user.color=blue), blob.bin (random, mode
#   600), empty, link-to-hello -> hello.txt, fifo, sparse (5 MiB, a hole and
#   "tail" at 4 MiB), text.log (compressible), nested/ (owner 1000:1000),
#   nested/hardlink (a hard link of hello.txt)}, empty-dir/
#   snap2 (incremental from snap1): hello.txt renamed and appended to, its
#   xattr removed and another set, empty unlinked, empty-dir removed,
#   blob.bin cloned (reflink) and truncated, nested/new.bin written.
# Sizes are kept small so that the whole set stays well under 1 MB.
set -euo pipefail
export TZ=UTC LC_ALL=C
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUT=$(realpath -m "$1")
COMPRESS=${COMPRESS-zstd}
BLOB=100000   # random bytes of docs/blob.bin (v1 writes are 48 KiB, v2 up to 128 KiB)
LINES=2000    # 26-byte phrases in docs/text.log
NEW=20000     # random bytes of docs/nested/new.bin (snap2)
for tool in btrfs mkfs.btrfs mount umount setfattr mkfifo truncate; do
  command -v "$tool" >/dev/null || { echo "$0: $tool missing (apt-get install btrfs-progs attr)" >&2; exit 1; }
done
mkdir -p "$OUT"
W=$(mktemp -d); IMG=$W/fs.img; MNT=$W/mnt; mkdir -p "$MNT"
truncate -s 512M "$IMG"; mkfs.btrfs -q "$IMG" >/dev/null
mount -o loop${COMPRESS:+,compress=$COMPRESS} "$IMG" "$MNT"
trap 'cd /; sync; umount "$MNT" || umount -l "$MNT"; rm -rf "$W"' EXIT
cd "$MNT"
btrfs -q subvolume create src
S=src
rnd() { head -c "$2" /dev/urandom > "$1"; }
mkdir -p $S/docs/nested $S/empty-dir
echo "hello stream" > $S/docs/hello.txt
rnd $S/docs/blob.bin $BLOB
: > $S/docs/empty
ln -s hello.txt $S/docs/link-to-hello
ln $S/docs/hello.txt $S/docs/nested/hardlink
mkfifo $S/docs/fifo
setfattr -n user.color -v blue $S/docs/hello.txt
chmod 600 $S/docs/blob.bin; chown 1000:1000 $S/docs/nested
truncate -s 5M $S/docs/sparse; printf 'tail' | dd of=$S/docs/sparse bs=1 seek=4194304 conv=notrunc status=none
printf 'compressible line of text %.0s' $(seq $LINES) > $S/docs/text.log
sync
btrfs -q subvolume snapshot -r $S snap1
# mutate for an incremental send
mv $S/docs/hello.txt $S/docs/renamed.txt
rm $S/docs/empty; rmdir $S/empty-dir
cp --reflink=always $S/docs/blob.bin $S/docs/blob-clone.bin
echo "appended" >> $S/docs/renamed.txt
truncate -s 1000 $S/docs/blob.bin
setfattr -x user.color $S/docs/renamed.txt; setfattr -n user.shape -v round $S/docs/renamed.txt
rnd $S/docs/nested/new.bin $NEW
sync
btrfs -q subvolume snapshot -r $S snap2
emit() { # name proto extra-args...
  local name=$1 proto=$2; shift 2
  btrfs -q send --proto "$proto" "$@" -f "$OUT/$name.stream"
  btrfs receive --dump -f "$OUT/$name.stream" > "$OUT/$name.dump"
}
emit full-v1 1 snap1
emit full-v2 2 snap1
emit incr-v1 1 -p snap1 snap2
emit incr-v2 2 -p snap1 snap2
emit nodata-v2 2 --no-data snap1
if [ -n "$COMPRESS" ]; then emit compressed-v2 2 --compressed-data snap1; fi
# the trees the streams describe, for receive checks
(cd snap1 && find . -printf '%y %m %s %p\n' | sort) > "$OUT/snap1.tree"
(cd snap2 && find . -printf '%y %m %s %p\n' | sort) > "$OUT/snap2.tree"
ls -la "$OUT"
