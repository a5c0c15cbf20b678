#!/usr/bin/env bash
# A long buy history against a local store: resident memory of every member
# and buy throughput after each round (the "Storage at scale" table in the
# README). Loopback only; every round is bounded by count and time.
#
#   tests/bench/history.sh [BINARY] [ROUNDS] [BUYS_PER_ROUND]
#   (defaults: target/release/bookstore, 4, 100000)
set -euo pipefail
bin=${1:-target/release/bookstore}
rounds=${2:-4}
per_round=${3:-100000}
work=${TMPDIR:-/tmp}/bookstore-history
rm -rf "$work"
mkdir -p "$work"
# Ports of its own (17000-17005, 18000-18005, 18100), away from a default store.
sed 's/127.0.0.1:80/127.0.0.1:170/; s/127.0.0.1:90/127.0.0.1:180/; s/127.0.0.1:9100/127.0.0.1:18100/' \
  "$(dirname "$0")/../../config/local-cluster.conf" > "$work/cluster.conf"
"$bin" bench --write-inventory "$work/inventory.txt" --books 7 > /dev/null
store=(--cluster "$work/cluster.conf" --data-dir "$work/data" --inventory "$work/inventory.txt")
"$bin" up "${store[@]}" > "$work/up.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null || true' EXIT
for _ in $(seq 60); do
  "$bin" status --cluster "$work/cluster.conf" --data-dir "$work/data" 2>/dev/null | grep -q 'order-1 .*yes' && break
  sleep 1
done

resident() {
  python3 - "$work/data/up.json" <<'PY'
import json, sys
members = json.load(open(sys.argv[1]))["members"]
out = []
for name in sorted(members):
    rss = next((l.split()[1] for l in open(f"/proc/{members[name]}/status") if l.startswith("VmRSS")), "?")
    out.append(f"{name}={int(rss) // 1024}MB")
print(" ".join(out))
PY
}

echo "idle: $(resident)"
for round in $(seq "$rounds"); do
  rate=$("$bin" bench --frontend http://127.0.0.1:17000 "${store[@]}" --ops buy --clients 32 \
           --requests "$per_round" --duration 120 --warmup 0 --json \
         | python3 -c 'import json, sys; r = json.load(sys.stdin)["runs"][0]; print("%.0f buys/s, %d errors" % (r["throughput"], r["errors"]))')
  echo "after $((round * per_round)) buys: $(resident)  ($rate)"
done
