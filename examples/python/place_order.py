#!/usr/bin/env python3
"""Place an order and wait for credit-sentinel's decision on it (confluent-kafka).

What an order pipeline does: publish `order.placed` to `credit.orders`, keyed by the customer
(so the customer's events stay in order on one partition, with the partitioner every producer
to the input topics shares: Kafka's default, murmur2), with an idempotent producer; then
read `credit.decisions` with `isolation.level=read_committed` (only decisions the engine has
committed, never those of a rolled-back batch) until the decision for this `order_id` arrives,
or give up after a timeout.

    pip install confluent-kafka
    python3 examples/python/place_order.py --bootstrap localhost:9092 \
        --customer ACME --order-id SO-1001 --amount 1250.00 --currency EUR

Prints the decision (one JSON line) and exits 0 when it is `approved`, 1 when it is held or
rejected (the reasons say why), and 2 when no decision came in time.
"""

import argparse
import datetime
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="localhost:9092")
    ap.add_argument("--customer", required=True)
    ap.add_argument("--order-id", required=True)
    ap.add_argument("--amount", required=True, help="a decimal string, e.g. 1250.00")
    ap.add_argument("--currency", default="EUR")
    ap.add_argument("--orders-topic", default="credit.orders")
    ap.add_argument("--decisions-topic", default="credit.decisions")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    args = ap.parse_args()

    # Read the decisions topic from its current end *before* placing the order, so the
    # decision cannot slip past (no consumer group: nothing to commit, nothing to rebalance).
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"place-order-{uuid.uuid4()}",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
    })
    meta = consumer.list_topics(args.decisions_topic, timeout=10)
    parts = meta.topics[args.decisions_topic].partitions
    if not parts:
        print(f"topic {args.decisions_topic} not found", file=sys.stderr)
        return 2
    start = []
    for p in parts:
        _, high = consumer.get_watermark_offsets(TopicPartition(args.decisions_topic, p), timeout=10)
        start.append(TopicPartition(args.decisions_topic, p, high))
    consumer.assign(start)

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,  # acks=all, no duplicates on retry
        # Kafka's default (Java) partitioner: a customer's key lands on the same partition
        # number as the other producers' (and the engine's commands), which librdkafka's own
        # default (CRC32) does not do. Every producer to the input topics must agree.
        "partitioner": "murmur2_random",
    })
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
    order = {
        "event_id": f"order-placed-{args.order_id}",  # the same id on a resend: a duplicate, not a second order
        "type": "order.placed",
        "occurred_at": now.replace("+00:00", "Z"),
        "customer_id": args.customer,
        "order_id": args.order_id,
        "amount": args.amount,
        "currency": args.currency,
    }
    failed = []
    producer.produce(args.orders_topic, key=args.customer, value=json.dumps(order),
                     on_delivery=lambda err, _msg: err and failed.append(err))
    producer.flush(10)
    if failed:
        print(f"order not written: {failed[0]}", file=sys.stderr)
        return 2

    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            decision = json.loads(msg.value())
            if decision.get("order_id") != args.order_id:
                continue  # another order's decision
            print(json.dumps(decision))
            return 0 if decision["status"] == "approved" else 1
    finally:
        consumer.close()
    print(f"no decision for {args.order_id} within {args.timeout} s", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
