"""Tutorial 3: publish/subscribe - a fanout exchange and exclusive, server-named queues."""

from conftest import QUIET_PERIOD, bodies, consume_n


def test_fanout_to_server_named_queues(connect_fn, names):
    logs = names.exchange("logs")
    publisher = connect_fn().channel()
    publisher.exchange_declare(logs, exchange_type="fanout")

    subscribers = []
    for _ in range(3):
        ch = connect_fn().channel()
        ok = ch.queue_declare(queue="", exclusive=True)
        queue = ok.method.queue
        assert queue.startswith("amq.gen-"), queue
        ch.queue_bind(exchange=logs, queue=queue)
        subscribers.append((ch, queue))
    assert len({q for _, q in subscribers}) == 3, "server-named queues must be distinct"

    for i in range(5):
        publisher.basic_publish(exchange=logs, routing_key="ignored-by-fanout-%d" % i, body=b"log %d" % i)

    for ch, queue in subscribers:
        got = consume_n(ch, queue, 5)
        assert [b for _, _, b in got] == [b"log %d" % i for i in range(5)]
        assert all(m.exchange == logs for m, _, _ in got)
        assert [m.routing_key for m, _, _ in got] == ["ignored-by-fanout-%d" % i for i in range(5)]


def test_fanout_without_queues_drops_and_unbind_stops_delivery(conn, ch, names):
    logs = names.exchange("logs")
    ch.exchange_declare(logs, exchange_type="fanout")
    ch.basic_publish(exchange=logs, routing_key="", body=b"nobody listens")  # silently dropped

    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, logs)
    ch.basic_publish(exchange=logs, routing_key="", body=b"one")
    ch.queue_unbind(queue, logs)
    ch.basic_publish(exchange=logs, routing_key="", body=b"two")
    conn.process_data_events(time_limit=QUIET_PERIOD)
    assert bodies(ch, queue) == [b"one"]


def test_exclusive_queue_deleted_when_connection_closes(connect_fn, names):
    owner = connect_fn()
    queue = owner.channel().queue_declare("", exclusive=True).method.queue
    owner.close()

    import pika
    import pytest

    probe = connect_fn().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        probe.queue_declare(queue, passive=True)
    assert err.value.reply_code == 404
