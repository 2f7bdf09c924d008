"""A real Kafka client against the broker's Kafka port, for the end-to-end tests.

    client.py LIBRARY produce BOOTSTRAP TOPIC [--gzip] [--acks 0|1|all] < messages
    client.py LIBRARY consume BOOTSTRAP TOPIC COUNT
    client.py kafka-python create-topic BOOTSTRAP NAME PARTITIONS
    client.py kafka-python api-version BOOTSTRAP
    client.py kafka-python offsets BOOTSTRAP TOPIC PARTITION TIME_MS
    client.py kafka-python produce-until-failure BOOTSTRAP TOPIC
    client.py kafka-python groups BOOTSTRAP GROUP...
    client.py kafka-python commit-offsets BOOTSTRAP GROUP TOPIC PARTITION=OFFSET...
    client.py LIBRARY group-consume BOOTSTRAP GROUP TOPIC [--stall-after N]
        [--session-ms MS] [--client-id ID]

`group-consume` subscribes to TOPIC as a member of GROUP, reading from the
earliest offset where the group has none committed. It prints
{"assigned": [partitions]} at each assignment, then each record it reads
({"p", "o", "v"}), each followed by {"committed": [p, next]} once its
synchronous commit returned (or {"commit_failed": [p, next]}). An error the
client raises (a refused join, say) is printed as {"error": name}, exit 3. After
--stall-after N records it prints {"stalled": true} and stops reading, staying
in the group (its client's heartbeats go on) until it is killed.

`produce-until-failure` sends numbered messages ("m0", "m1", ...) with acks 1
and prints each one the broker acknowledged, as it is acknowledged, until a
send fails (the broker is gone).

`produce ... --check-file PATH` checks, as each send returns, that PATH (the
broker's persistence file) already holds the record's line.

`--sasl USER PASSWORD` authenticates with SCRAM-SHA-256, `--tls CAFILE` speaks
TLS to the broker, trusting CAFILE (kafka-python's produce and consume);
`--max-block-ms MS` bounds how long kafka-python's produce waits for the broker.

LIBRARY is kafka-python or confluent-kafka. Messages come on stdin as JSON
lines {"k": hex or null, "v": hex, "h": [[name, hex], ...]}; what is sent
(partition and offset) or read goes to stdout as JSON lines, in the same shape
plus "p" and "o". The tests compare them with what they sent and with the
broker's files.
"""

import json
import os
import sys
import time


def unhex(s):
    return None if s is None else bytes.fromhex(s)


def tohex(b):
    return None if b is None else b.hex()


def read_messages():
    return [json.loads(line) for line in sys.stdin if line.strip()]


def option(args, name, default):
    return args[args.index(name) + 1] if name in args else default


def say(**fields):
    print(json.dumps(fields), flush=True)


def stall():
    say(stalled=True)
    while True:
        time.sleep(3600)


def kafka_python_security(args):
    """The client settings --sasl USER PASSWORD and --tls CAFILE ask for."""
    settings = {}
    if "--tls" in args:
        settings.update(security_protocol="SSL", ssl_cafile=option(args, "--tls", None))
    if "--sasl" in args:
        i = args.index("--sasl")
        settings.update(
            security_protocol="SASL_SSL" if "--tls" in args else "SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username=args[i + 1], sasl_plain_password=args[i + 2],
        )
    return settings


def kafka_python(command, args):
    import kafka
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    if command == "api-version":
        p = KafkaProducer(bootstrap_servers=args[0])
        print(json.dumps({"api_version": list(p.config["api_version"])}))
        p.close()
    elif command == "produce":
        bootstrap, topic = args[0], args[1]
        acks = args[args.index("--acks") + 1] if "--acks" in args else "1"
        acks = "all" if acks == "all" else int(acks)
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks=acks,
            compression_type="gzip" if "--gzip" in args else None,
            linger_ms=5,
            max_block_ms=int(option(args, "--max-block-ms", "60000")),
            **kafka_python_security(args),
        )
        futures = [
            producer.send(
                topic,
                key=unhex(m.get("k")),
                value=unhex(m["v"]),
                headers=[(n, unhex(v)) for n, v in m.get("h", [])],
            )
            for m in read_messages()
        ]
        check = args[args.index("--check-file") + 1] if "--check-file" in args else None
        for f in futures:
            md = f.get(timeout=30)
            if check is not None:
                prefix = ("%s\t%d\t%d\t" % (topic, md.partition, md.offset)).encode()
                with open(check, "rb") as lines:
                    if not any(line.startswith(prefix) for line in lines):
                        sys.exit("offset %d returned before it was in %s" % (md.offset, check))
            print(json.dumps({"p": md.partition, "o": md.offset}))
        producer.flush()
        producer.close()
    elif command == "consume":
        bootstrap, topic, count = args[0], args[1], int(args[2])
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            consumer_timeout_ms=30000,
            **kafka_python_security(args),
        )
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        seen = 0
        for m in consumer:
            print(json.dumps({
                "p": m.partition, "o": m.offset, "k": tohex(m.key), "v": tohex(m.value),
                "h": [[n, tohex(v)] for n, v in (m.headers or [])],
            }), flush=True)
            seen += 1
            if seen == count:
                break
        consumer.close()
    elif command == "produce-until-failure":
        import threading
        bootstrap, topic = args[0], args[1]
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks=1, retries=0, linger_ms=1,
            request_timeout_ms=2000, max_block_ms=2000, reconnect_backoff_max_ms=100,
        )
        failed = threading.Event()
        lock = threading.Lock()

        def acknowledged(value):
            def report(md):
                with lock:
                    print(json.dumps({"p": md.partition, "o": md.offset, "v": value}), flush=True)
            return report

        i = 0
        while not failed.is_set():
            value = "m%d" % i
            try:
                f = producer.send(topic, value=value.encode())
            except Exception:
                break
            f.add_callback(acknowledged(value))
            f.add_errback(lambda e: failed.set())
            i += 1
            if i % 100 == 0:
                producer.flush(timeout=5)
        producer.close(timeout=2)
    elif command == "group-consume":
        from kafka import ConsumerRebalanceListener, OffsetAndMetadata
        from kafka.errors import CommitFailedError, KafkaError
        bootstrap, group, topic = args[0], args[1], args[2]
        stall_after = int(option(args, "--stall-after", "0"))
        session_ms = int(option(args, "--session-ms", "3000"))

        class Assigned(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                pass

            def on_partitions_assigned(self, assigned):
                say(assigned=sorted(tp.partition for tp in assigned))

        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group,
            client_id=option(args, "--client-id", "kafka-python"),
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=session_ms, heartbeat_interval_ms=max(100, session_ms // 6),
        )
        consumer.subscribe([topic], listener=Assigned())
        read = 0
        while True:
            try:
                polled = consumer.poll(timeout_ms=100)
            except KafkaError as e:
                say(error=type(e).__name__)
                # At once: the client's heartbeat thread would keep the process.
                os._exit(3)
            for tp, records in polled.items():
                for m in records:
                    say(p=m.partition, o=m.offset, v=tohex(m.value))
                    try:
                        consumer.commit({tp: OffsetAndMetadata(m.offset + 1, None)})
                        say(committed=[m.partition, m.offset + 1])
                    except CommitFailedError:
                        say(commit_failed=[m.partition, m.offset + 1])
                    read += 1
                    if read == stall_after:
                        stall()
    elif command == "commit-offsets":
        # As kafka-consumer-groups --reset-offsets does: a commit from outside
        # the group's membership, while it has no members.
        from kafka import OffsetAndMetadata
        bootstrap, group, topic = args[0], args[1], args[2]
        wanted = {TopicPartition(topic, int(p)): OffsetAndMetadata(int(o), None)
                  for p, o in (a.split("=") for a in args[3:])}
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                 enable_auto_commit=False)
        consumer.assign(list(wanted))
        consumer.commit(wanted)
        consumer.close()
    elif command == "groups":
        from kafka.admin import KafkaAdminClient
        admin = KafkaAdminClient(bootstrap_servers=args[0])
        listed = sorted([list(g) for g in admin.list_consumer_groups()])

        def assigned(m):
            a = m.member_assignment
            return [] if not a else sorted(
                [t, p] for t, ps in a.assignment for p in ps)

        described = [
            {"group": d.group, "state": d.state, "protocol_type": d.protocol_type,
             "protocol": d.protocol, "members": sorted(m.member_id for m in d.members),
             "clients": sorted([m.client_id, m.client_host] for m in d.members),
             "assigned": sorted(p for m in d.members for p in assigned(m))}
            for d in admin.describe_consumer_groups(args[1:])
        ]
        print(json.dumps({"listed": listed, "described": described}))
        admin.close()
    elif command == "offsets":
        bootstrap, topic, partition, at = args[0], args[1], int(args[2]), int(args[3])
        consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        tp = TopicPartition(topic, partition)
        found = consumer.offsets_for_times({tp: at})[tp]
        print(json.dumps({
            "earliest": consumer.beginning_offsets([tp])[tp],
            "latest": consumer.end_offsets([tp])[tp],
            "at_time": None if found is None else found.offset,
        }))
        consumer.close()
    elif command == "create-topic":
        from kafka.admin import KafkaAdminClient, NewTopic
        admin = KafkaAdminClient(bootstrap_servers=args[0])
        admin.create_topics([NewTopic(args[1], int(args[2]), 1)])
        admin.close()
    else:
        sys.exit("unknown command " + command)
    _ = kafka


def confluent_kafka(command, args):
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

    if command == "produce":
        bootstrap, topic = args[0], args[1]
        acks = args[args.index("--acks") + 1] if "--acks" in args else "1"
        producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "compression.type": "gzip" if "--gzip" in args else "none",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
        })
        messages = read_messages()
        # Deliveries are reported partition by partition: each in its place.
        results = [None] * len(messages)

        def done(i):
            def report(err, msg):
                if err is not None:
                    sys.exit("delivery failed: %s" % err)
                results[i] = (msg.partition(), msg.offset())
            return report

        for i, m in enumerate(messages):
            producer.produce(
                topic,
                key=unhex(m.get("k")),
                value=unhex(m["v"]),
                headers=[(n, unhex(v)) for n, v in m.get("h", [])],
                on_delivery=done(i),
            )
            producer.poll(0)
        left = producer.flush(30)
        if left:
            sys.exit("%d messages not delivered" % left)
        for p, o in results:
            print(json.dumps({"p": p, "o": o}))
    elif command == "consume":
        bootstrap, topic, count = args[0], args[1], int(args[2])
        # confluent-kafka wants a group id even for assign() without a group.
        consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
        })
        meta = consumer.list_topics(topic, timeout=30)
        parts = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        seen = 0
        while seen < count:
            m = consumer.poll(30)
            if m is None:
                sys.exit("no message within 30 s after %d" % seen)
            if m.error():
                sys.exit("consume failed: %s" % m.error())
            print(json.dumps({
                "p": m.partition(), "o": m.offset(), "k": tohex(m.key()), "v": tohex(m.value()),
                "h": [[n, tohex(v)] for n, v in (m.headers() or [])],
            }), flush=True)
            seen += 1
        consumer.close()
    elif command == "group-consume":
        bootstrap, group, topic = args[0], args[1], args[2]
        stall_after = int(option(args, "--stall-after", "0"))
        session_ms = int(option(args, "--session-ms", "3000"))

        def assigned(consumer, partitions):
            say(assigned=sorted(tp.partition for tp in partitions))

        consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group,
            "client.id": option(args, "--client-id", "rdkafka"),
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 6),
        })
        consumer.subscribe([topic], on_assign=assigned)
        read = 0
        while True:
            m = consumer.poll(0.1)
            if m is None:
                continue
            if m.error():
                sys.exit("consume failed: %s" % m.error())
            say(p=m.partition(), o=m.offset(), v=tohex(m.value()))
            try:
                consumer.commit(message=m, asynchronous=False)
                say(committed=[m.partition(), m.offset() + 1])
            except Exception:
                say(commit_failed=[m.partition(), m.offset() + 1])
            read += 1
            if read == stall_after:
                stall()
    else:
        sys.exit("unknown command " + command)


def main():
    library, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if library == "kafka-python":
        kafka_python(command, args)
    elif library == "confluent-kafka":
        confluent_kafka(command, args)
    else:
        sys.exit("unknown library " + library)


if __name__ == "__main__":
    main()
