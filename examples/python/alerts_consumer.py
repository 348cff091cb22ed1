#!/usr/bin/env python3
"""Follow credit-sentinel's early warnings (`credit.alerts`): a risk team's starting point.

Reads committed alerts only (`read_committed`), as a member of a consumer group (so several
copies share the partitions and a restart resumes where the group left off), and commits its
position after handling each alert. Critical alerts (e.g. SHIPPED_WITHOUT_RELEASE) are printed
to stderr as well; plug a pager or a ticket system in `handle`.

    pip install confluent-kafka
    python3 examples/python/alerts_consumer.py --bootstrap localhost:9092 --group risk-team

`--max N` and `--timeout S` stop after N alerts or S seconds without one (for scripts and
tests); without them it runs until interrupted.
"""

import argparse
import json
import sys

from confluent_kafka import Consumer, KafkaException


def handle(alert: dict) -> None:
    line = (f"{alert['at']} {alert['severity']:8} {alert['kind']:28} "
            f"{alert.get('customer_id') or alert.get('group_id') or '-'} "
            f"{json.dumps(alert.get('details', {}), sort_keys=True)}")
    print(line, flush=True)
    if alert["severity"] == "critical":
        print(f"CRITICAL {json.dumps(alert)}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="localhost:9092")
    ap.add_argument("--group", default="risk-team")
    ap.add_argument("--topic", default="credit.alerts")
    ap.add_argument("--from-beginning", action="store_true",
                    help="a new group starts at the oldest alert (default: only new ones)")
    ap.add_argument("--max", type=int, default=0, help="stop after this many alerts")
    ap.add_argument("--timeout", type=float, default=0.0,
                    help="stop after this many seconds without an alert")
    args = ap.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
    })
    consumer.subscribe([args.topic])
    seen, idle = 0, 0.0
    try:
        while not args.max or seen < args.max:
            msg = consumer.poll(0.5)
            if msg is None:
                idle += 0.5
                if args.timeout and idle >= args.timeout:
                    break
                continue
            if msg.error():
                raise KafkaException(msg.error())
            idle = 0.0
            handle(json.loads(msg.value()))
            consumer.commit(message=msg, asynchronous=False)
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0 if seen or not args.max else 2


if __name__ == "__main__":
    sys.exit(main())
