#!/usr/bin/env bash
# `eventscope inspect` to the end of a topic of CloudEvents structured-mode records against
# `kcat -C -e` on the same topic, end to end (start-up included), side by side in one run.
# N records of ~500 B written by kcat to `eventscope broker` (its own process, 64 partitions: it keeps 5 MB a partition),
# once with `content-type: application/cloudevents+json` and once with `application/json` (what
# the official Python SDK writes: recognised by shape).
# Several binaries (a build before a change and after it) take turns on the same topics.
#   usage: [N=200000] [RUNS=3] benches/structured_inspect.sh [BINARY...]
set -euo pipefail
cd "$(dirname "$0")/.."
bins=("${@:-target/debug/eventscope}")
bin="${bins[0]}"
n="${N:-200000}"
runs="${RUNS:-3}"
port=$((20000 + RANDOM % 10000))
work=$(mktemp -d)
"$bin" broker --port "$port" --partitions 64 >"$work/broker.log" 2>&1 &
bp=$!
trap 'kill $bp 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do kcat -b "127.0.0.1:$port" -L >/dev/null 2>&1 && break; sleep 0.2; done
python3 - "$n" >"$work/events" <<'PY'
import json, random, sys
random.seed(7)
for i in range(int(sys.argv[1])):
    order = f"order-{i % 5000}"
    print(f"{order}\t" + json.dumps({
        "specversion": "1.0", "id": f"e-{i}", "type": random.choice(["OrderCreated", "OrderPaid", "OrderShipped"]),
        "source": "/orders", "subject": order, "time": "2026-11-28T08:00:00.%03dZ" % (i % 1000),
        "correlationid": f"corr-{i % 5000}", "causationid": f"e-{i - 1}", "aggregateversion": i // 5000 + 1,
        "traceparent": "00-%032x-%016x-01" % (random.getrandbits(128), random.getrandbits(64)),
        "datacontenttype": "application/json",
        "data": {"order_id": order, "customer": f"c-{i % 977}", "amount": round(random.random() * 500, 2),
                 "currency": "EUR", "items": [{"sku": f"sku-{i % 31}", "qty": 1 + i % 3, "price": 9.99}],
                 "note": "x" * 80},
    }, separators=(",", ":")))
PY
for ct in application/cloudevents+json application/json; do
  topic="structured-${ct//[^a-z]/-}"
  kcat -b "127.0.0.1:$port" -P -t "$topic" -K $'\t' -H "content-type=$ct" -l "$work/events"
  echo "== $n records on $topic ($(wc -c <"$work/events") bytes of JSON lines), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "kcat -C -e: %e s wall, %U+%S s CPU" \
      kcat -b "127.0.0.1:$port" -C -e -o beginning -q -t "$topic" >/dev/null
    for b in "${bins[@]}"; do
      /usr/bin/time -f "$b inspect: %e s wall, %U+%S s CPU, %M KiB max RSS" \
        "$b" inspect --brokers "127.0.0.1:$port" --topics "$topic" --report /dev/null 2>&1 |
        grep -E 'wall|records,' | sed -E 's/, anomalies.*"poison-message":([0-9]+).*/ (\1 poison)/'
    done
  done
done
