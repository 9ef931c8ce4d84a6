#!/usr/bin/env bash
# `send --rate-limit`: the rate a transfer over loopback actually gets,
# against the limit (issue 12, item 4: held within 10% over a few seconds).
#
#   benches/rate.sh [BYTES_PER_S] [SECONDS]    # default 20000000 (20 MB/s) for about 5 s
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-20000000}
secs=${2:-5}
cargo build -q --release -p proto-stream-cli
cargo build -q --release -p proto-stream --example make_big_native
B=target/release/proto-stream
T=$(mktemp -d)
trap 'pkill -f "$T" 2>/dev/null || true; rm -rf "$T"' EXIT
mib=$(( (rate * secs + 1048575) / 1048576 ))
target/release/examples/make_big_native "$mib" "$T/src.stream"
total=$(stat -c %s "$T/src.stream")
sync
"$B" send "$T/src.stream" --listen 127.0.0.1:0 --rate-limit "$rate" > "$T/send.log" 2>&1 &
addr=""
for _ in $(seq 200); do
  addr=$(sed -n 's/^listening on //p' "$T/send.log")
  [ -n "$addr" ] && break
  sleep 0.05
done
t0=$(date +%s.%N)
"$B" receive "$T/out.stream" --from "tcp://$addr" > /dev/null 2>&1
t1=$(date +%s.%N)
cmp -s "$T/src.stream" "$T/out.stream" || { echo "rate.sh: the output differs" >&2; exit 1; }
echo "$t0 $t1 $total $rate" | awk '{
  got = $3 / ($2 - $1); dev = (got - $4) / $4 * 100;
  printf "limit %d B/s: %d bytes in %.2f s = %d B/s (%+.1f%%, target within 10%%) %s\n",
    $4, $3, $2 - $1, got, dev, (dev <= 10 && dev >= -10) ? "PASS" : "MISS" }'
