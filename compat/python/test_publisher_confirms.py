"""Publisher confirms: confirm.select, basic.ack for every publish, mandatory
unroutable messages come back as basic.return (pika: UnroutableError)."""

import pika
import pytest

from conftest import bodies, assert_count


def test_confirm_delivery_acks_every_publish(ch, names):
    queue = names.queue("confirmed")
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    for i in range(50):
        # BlockingChannel.basic_publish waits for the ack; a nack raises NackError.
        ch.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
    assert_count(ch, queue, 50)
    assert [int(b) for b in bodies(ch, queue)] == list(range(50))


def test_unroutable_mandatory_is_returned(ch, names):
    ex = names.exchange("nowhere")
    ch.exchange_declare(ex, exchange_type="direct")
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as err:
        ch.basic_publish(ex, "no-such-binding", b"lost", mandatory=True)
    [returned] = err.value.messages
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == ex
    assert returned.method.routing_key == "no-such-binding"
    assert returned.body == b"lost"
    # The channel stays usable after a return.
    assert ch.is_open
    queue = names.queue("after")
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"still works", mandatory=True)
    assert bodies(ch, queue) == [b"still works"]


def test_unroutable_mandatory_via_default_exchange(ch, names):
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", names.prefix + ".no-such-queue", b"lost", mandatory=True)


def test_unroutable_without_mandatory_is_confirmed_and_dropped(ch, names):
    ex = names.exchange("nowhere")
    ch.exchange_declare(ex, exchange_type="fanout")
    ch.confirm_delivery()
    ch.basic_publish(ex, "", b"dropped")  # no exception: acked, silently dropped


def test_publish_to_missing_exchange_closes_channel_404(conn, ch, names):
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.basic_publish(names.prefix + ".missing-exchange", "k", b"x")
    assert err.value.reply_code == 404
    assert "NOT_FOUND" in err.value.reply_text
    assert conn.is_open, "a channel error must not close the connection"
    conn.channel().queue_declare("", exclusive=True)


def test_returns_arrive_as_callbacks_without_confirms(conn, ch, names):
    """basic.return also arrives on a channel not in confirm mode."""
    ex = names.exchange("nowhere")
    ch.exchange_declare(ex, exchange_type="topic")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m.reply_code, m.routing_key, b)))
    ch.basic_publish(ex, "a.b", b"r1", mandatory=True)
    ch.basic_publish(ex, "a.c", b"r2", mandatory=True)
    deadline = 50
    while len(returned) < 2 and deadline:
        conn.process_data_events(time_limit=0.1)
        deadline -= 1
    assert returned == [(312, "a.b", b"r1"), (312, "a.c", b"r2")]
