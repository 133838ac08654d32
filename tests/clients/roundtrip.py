"""Produce, consume in a group and commit with a pure-Python Kafka client.

Usage: roundtrip.py BOOTSTRAP TOPIC kafka-python|aiokafka
Prints one JSON line: what was produced, consumed and committed. Exits non-zero
on any failure (the Rust test shows stderr).
"""
import asyncio
import json
import logging
import sys
import time

N = 20
# librdkafka's mock completes a rebalance of a stable group only after
# session.timeout.ms - 1 s (a real broker: once every member rejoined), and a
# consumer rejoins once right after its first join: keep the session short, as
# the demo's consumers do.
GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def records():
    for i in range(N):
        key = f"order-{i % 4}".encode()
        value = json.dumps({"id": f"py-{i}", "type": "OrderPlaced", "data": {"amount": 10 * i}}).encode()
        # A CloudEvent in Kafka binary mode, as eventscope decodes it.
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", f"py-{i}".encode()),
            ("ce_type", b"OrderPlaced"),
            ("ce_source", b"/python"),
            ("content-type", b"application/json"),
        ]
        yield key, value, headers


def with_kafka_python(bootstrap, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10000)
    for key, value, headers in records():
        producer.send(topic, key=key, value=value, headers=headers).get(timeout=10)
    producer.flush()
    producer.close()

    group = f"py-group-{int(time.time() * 1000)}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=20000,
        **GROUP,
    )
    seen = []
    # A join on the mock can take a rebalance round or two (each up to the
    # session timeout) when the machine is busy.
    deadline = time.monotonic() + 60
    while len(seen) < N and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            seen.extend(json.loads(m.value)["id"] for m in batch)
    if not consumer.assignment():
        logging.error("no partition assigned to %s after 60 s", group)
    consumer.commit()
    parts = consumer.assignment()
    committed = {tp.partition: consumer.committed(tp) for tp in parts}
    ends = consumer.end_offsets(list(parts))
    consumer.close()

    # A new member of the same group starts where the group committed: nothing left.
    again = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, **GROUP,
    )
    left = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        for batch in again.poll(timeout_ms=500).values():
            left.extend(m.offset for m in batch)
        if again.assignment():
            break
    left_after = sum(len(b) for b in again.poll(timeout_ms=1000).values())
    again.close()
    return {
        "produced": N,
        "consumed": sorted(seen, key=lambda s: int(s.split("-")[1])),
        "committed": sum(v or 0 for v in committed.values()),
        "end": sum(ends.values()),
        "redelivered": len(left) + left_after,
    }


async def with_aiokafka(bootstrap, topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records():
            await producer.send_and_wait(topic, key=key, value=value, headers=headers)
    finally:
        await producer.stop()

    group = f"aio-group-{int(time.time() * 1000)}"
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group,
        auto_offset_reset="earliest", enable_auto_commit=False, **GROUP,
    )
    await consumer.start()
    seen = []
    try:
        deadline = time.monotonic() + 30
        while len(seen) < N and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                seen.extend(json.loads(m.value)["id"] for m in batch)
        await consumer.commit()
        parts = consumer.assignment()
        committed = 0
        for tp in parts:
            committed += (await consumer.committed(tp)) or 0
        ends = await consumer.end_offsets(list(parts))
    finally:
        await consumer.stop()
    return {
        "produced": N,
        "consumed": sorted(seen, key=lambda s: int(s.split("-")[1])),
        "committed": committed,
        "end": sum(ends.values()),
        "redelivered": 0,
    }


def main():
    # The client's own account of its group (joins, rebalances, errors) goes to
    # stderr, which the Rust test shows when the round trip is incomplete.
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format="%(relativeCreated)7.0f ms %(levelname)s %(name)s: %(message)s",
    )
    bootstrap, topic, client = sys.argv[1], sys.argv[2], sys.argv[3]
    if client == "kafka-python":
        out = with_kafka_python(bootstrap, topic)
    elif client == "aiokafka":
        out = asyncio.run(with_aiokafka(bootstrap, topic))
    else:
        sys.exit(f"unknown client {client}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
