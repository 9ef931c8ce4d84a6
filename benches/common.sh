# Sourced by the whole-process bench scripts (dump-vs-progs.sh, whole.sh):
# the workspace, the perf streams' directory, the release binary, and the
# tools every one of them needs.
# shellcheck shell=bash
export TZ=UTC LC_ALL=C
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PERF=${PROTO_STREAM_PERF_DIR:-$ROOT/perf}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/proto-stream
BTRFS=$(command -v btrfs) || { echo "btrfs (btrfs-progs) not found" >&2; exit 1; }
for tool in hyperfine jq; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done
