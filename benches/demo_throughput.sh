#!/usr/bin/env bash
# The demo's end-to-end throughput (issue 16, item 4): `eventscope demo
# --headless` places ORDERS orders and runs to quiescence, RUNS times on SQLite
# (a fresh file each) and on PostgreSQL (a fresh database each, when PG_URL's
# server answers). Prints per run the time to quiescence (start-up included),
# orders per second, the relay's publish latency p50/p99/max (outbox commit ->
# broker acknowledgement) and whether every invariant held.
#
#   cargo build --release && benches/demo_throughput.sh target/release/eventscope
#   ORDERS=2000 RUNS=3 PG_URL=postgres://postgres@127.0.0.1:5432 benches/demo_throughput.sh BIN [BIN2 ...]
#
# With several binaries the runs take turns (A B A B ...), so a busy machine
# slows each alike.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 EVENTSCOPE_BIN [MORE_BINS...]" >&2; exit 2; }
orders=${ORDERS:-2000}
runs=${RUNS:-3}
pg=${PG_URL:-postgres://postgres@127.0.0.1:5432}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PGOPTIONS=--client-min-messages=warning

have_pg=false
if command -v psql > /dev/null && psql "$pg/postgres" -qtAc 'SELECT 1' > /dev/null 2>&1; then
  have_pg=true
fi

one() { # bin database-url label
  local bin=$1 url=$2 label=$3 t
  t=$( { /usr/bin/time -f '%e' "$bin" demo --headless --orders "$orders" --seed 7 \
          --database "$url" --report "$work/r.json" 2>&1 >/dev/null | grep -E 'quiescent$' \
          | sed -E 's/^\[ *([0-9.]+)s\].*/\1/'; } )
  python3 - "$work/r.json" "$label" "$t" "$orders" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
label, t, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
lat = r["relay"]["latency_ms"]
inv = r["invariants"]
ok = all(v is True for v in inv.values()) if isinstance(inv, dict) else bool(inv)
rate = f"{n / float(t):.0f}" if t else "-"
print(f"{label:<40} quiescent {t or 'never'} s  {rate} orders/s  relay p50/p99/max "
      f"{lat['p50']}/{lat['p99']}/{lat['max']} ms  invariants {'all true' if ok else inv}")
EOF
}

load() { cut -d' ' -f1 /proc/loadavg; }
echo "$orders orders, $runs runs per binary and database; load average $(load)"
for i in $(seq 1 "$runs"); do
  for bin in "$@"; do
    rm -f "$work"/d.db*
    one "$bin" "sqlite://$work/d.db" "$(basename "$bin") sqlite #$i"
    if $have_pg; then
      db="es_throughput_$$_$i"
      psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
      one "$bin" "$pg/$db" "$(basename "$bin") postgres #$i"
      psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    fi
  done
done
echo "load average at the end $(load)"
