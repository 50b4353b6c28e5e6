"""Other RabbitMQ features our services and issue 3 rely on: exchange-to-exchange
bindings, alternate-exchange, priorities, single active consumer, max-length with
reject-publish, exclusive consumers, consumer cancel notification, QoS."""

import time

import pika
import pytest

from conftest import RECEIVE_TIMEOUT, bodies, wait_until


def test_exchange_to_exchange_binding(ch, names):
    upstream = names.exchange("upstream")
    downstream = names.exchange("downstream")
    ch.exchange_declare(upstream, exchange_type="topic")
    ch.exchange_declare(downstream, exchange_type="direct")
    ch.exchange_bind(destination=downstream, source=upstream, routing_key="order.*")
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, downstream, routing_key="order.created")
    ch.basic_publish(upstream, "order.created", b"yes")
    ch.basic_publish(upstream, "order.deleted", b"no: downstream key differs")
    ch.basic_publish(upstream, "user.created", b"no: upstream pattern")
    assert bodies(ch, q) == [b"yes"]
    ch.exchange_unbind(destination=downstream, source=upstream, routing_key="order.*")
    ch.basic_publish(upstream, "order.created", b"after unbind")
    assert bodies(ch, q) == []


def test_alternate_exchange_catches_unroutable(ch, names):
    ae = names.exchange("ae")
    main = names.exchange("main")
    ch.exchange_declare(ae, exchange_type="fanout")
    ch.exchange_declare(main, exchange_type="direct", arguments={"alternate-exchange": ae})
    ch.confirm_delivery()
    routed = ch.queue_declare("", exclusive=True).method.queue
    unrouted = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(routed, main, routing_key="known")
    ch.queue_bind(unrouted, ae)
    ch.basic_publish(main, "known", b"k", mandatory=True)
    ch.basic_publish(main, "unknown", b"u", mandatory=True)  # routed via AE: no return
    assert bodies(ch, routed) == [b"k"]
    assert bodies(ch, unrouted) == [b"u"]


def test_priority_queue(ch, names):
    q = names.queue("prio")
    ch.queue_declare(q, arguments={"x-max-priority": 10})
    ch.confirm_delivery()
    for body, prio in ((b"low", 1), (b"none", None), (b"high", 9), (b"mid", 5), (b"high2", 9)):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    assert bodies(ch, q) == [b"high", b"high2", b"mid", b"low", b"none"]


def test_single_active_consumer(connect_fn, names):
    q = names.queue("sac")
    c1, c2 = connect_fn(), connect_fn()
    ch1, ch2 = c1.channel(), c2.channel()
    ch1.queue_declare(q, arguments={"x-single-active-consumer": True})
    got1, got2 = [], []
    ch1.basic_consume(q, lambda c, m, p, b: got1.append(b), auto_ack=True)
    ch2.basic_consume(q, lambda c, m, p, b: got2.append(b), auto_ack=True)
    for i in range(5):
        ch1.basic_publish("", q, str(i).encode())
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while len(got1) + len(got2) < 5 and time.monotonic() < deadline:
        c1.process_data_events(time_limit=0.02)
        c2.process_data_events(time_limit=0.02)
    assert got1 == [b"0", b"1", b"2", b"3", b"4"] and got2 == [], "only the first consumer is active"
    c1.close()  # the active consumer goes away: the second takes over
    ch2.connection.process_data_events(time_limit=0.1)
    connect_fn().channel().basic_publish("", q, b"5")
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while not got2 and time.monotonic() < deadline:
        c2.process_data_events(time_limit=0.02)
    assert got2 == [b"5"]


def test_max_length_reject_publish_nacks(ch, names):
    q = names.queue("bounded")
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"3")
    assert bodies(ch, q) == [b"1", b"2"]


def test_max_length_bytes_drop_head(ch, names):
    q = names.queue("bytes")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10})
    ch.confirm_delivery()
    for body in (b"aaaa", b"bbbb", b"cccc"):
        ch.basic_publish("", q, body)
    assert bodies(ch, q) == [b"bbbb", b"cccc"]


def test_exclusive_consumer_is_403_for_others(conn, ch, names):
    q = names.queue("excl-consumer")
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        other.basic_consume(q, lambda *a: None)
    assert err.value.reply_code == 403
    assert err.value.reply_text.startswith("ACCESS_REFUSED")


def test_consumer_cancel_notify_on_queue_delete(connect_fn, names):
    q = names.queue("doomed")
    conn = connect_fn()
    ch = conn.channel()
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    connect_fn().channel().queue_delete(q)
    wait_until(lambda: cancelled, conn=conn, what="basic.cancel from the broker")
    assert cancelled == [tag]
    assert ch.is_open


def test_duplicate_consumer_tag_is_530(connect_fn, names):
    q = names.queue("q")
    conn = connect_fn()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None, consumer_tag="same")
    with pytest.raises((pika.exceptions.ConnectionClosedByBroker, pika.exceptions.DuplicateConsumerTag)):
        ch.basic_consume(q, lambda *a: None, consumer_tag="same")


def test_prefetch_limits_unacked_per_consumer(conn, ch, names):
    q = names.queue("prefetch")
    ch.queue_declare(q)
    for i in range(10):
        ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=3)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(m.delivery_tag))
    wait_until(lambda: len(got) >= 3, conn=conn, what="3 deliveries")
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 3, "prefetch_count=3 allows only 3 unacked deliveries"
    ch.basic_ack(got[1], multiple=True)  # frees two slots
    wait_until(lambda: len(got) >= 5, conn=conn, what="2 more deliveries")
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 5


def test_heartbeat_is_negotiated(connect_fn):
    conn = connect_fn(heartbeat=5)
    assert conn._impl.params.heartbeat == 5
    conn.process_data_events(time_limit=0.1)
    assert conn.is_open
