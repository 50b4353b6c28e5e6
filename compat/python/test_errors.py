"""Channel and connection exceptions with the reply codes RabbitMQ uses."""

import urllib.parse

import pika
import pytest

from conftest import AMQP_URL, assert_count, url_parameters


def with_password(url, password):
    parts = urllib.parse.urlsplit(url)
    netloc = "%s:%s@%s" % (parts.username or "guest", password, parts.hostname)
    if parts.port:
        netloc += ":%d" % parts.port
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def test_passive_declare_missing_queue_is_404(conn, ch, names):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare(names.prefix + ".missing", passive=True)
    assert err.value.reply_code == 404
    assert err.value.reply_text.startswith("NOT_FOUND")
    assert not ch.is_open
    assert conn.is_open, "a channel exception leaves the connection open"
    assert conn.channel().is_open


def test_passive_declare_missing_exchange_is_404(conn, ch, names):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.exchange_declare(names.prefix + ".missing", passive=True)
    assert err.value.reply_code == 404
    assert conn.is_open


def test_passive_declare_existing_queue_reports_counts(ch, names):
    queue = names.queue("there")
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"1")
    ch.basic_publish("", queue, b"2")
    assert_count(ch, queue, 2)
    ok = ch.queue_declare(queue, passive=True)
    assert ok.method.message_count == 2
    assert ok.method.consumer_count == 0
    ch.basic_consume(queue, lambda *a: None)
    ok = ch.queue_declare(queue, passive=True)
    assert ok.method.consumer_count == 1


def test_exclusive_queue_from_other_connection_is_405(connect_fn, names):
    queue = names.queue("mine")
    owner = connect_fn().channel()
    owner.queue_declare(queue, exclusive=True)

    other_conn = connect_fn()
    for action in (
        lambda ch: ch.queue_declare(queue, exclusive=True),
        lambda ch: ch.basic_consume(queue, lambda *a: None),
        lambda ch: ch.queue_declare(queue, passive=True),
    ):
        ch = other_conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            action(ch)
        assert err.value.reply_code == 405
        assert err.value.reply_text.startswith("RESOURCE_LOCKED")
    assert other_conn.is_open


def test_wrong_password_is_access_refused():
    url = with_password(AMQP_URL, "definitely-not-the-password")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as err:
        pika.BlockingConnection(url_parameters(url))
    assert "ACCESS_REFUSED" in str(err.value)
    assert "403" in str(err.value)


def test_redeclare_with_different_arguments_is_406(conn, ch, names):
    queue = names.queue("q")
    ch.queue_declare(queue, durable=False)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare(queue, durable=True)
    assert err.value.reply_code == 406
    assert err.value.reply_text.startswith("PRECONDITION_FAILED")

    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare(queue, arguments={"x-message-ttl": 1000})
    assert err.value.reply_code == 406

    ch = conn.channel()
    ex = names.exchange("x")
    ch.exchange_declare(ex, exchange_type="direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.exchange_declare(ex, exchange_type="fanout")
    assert err.value.reply_code == 406
    assert conn.is_open


def test_declare_amq_prefixed_is_403(conn, ch):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.exchange_declare("amq.compat-not-allowed", exchange_type="direct")
    assert err.value.reply_code == 403
    assert err.value.reply_text.startswith("ACCESS_REFUSED")


def test_unknown_exchange_type_is_503_connection_error(connect_fn, names):
    conn = connect_fn()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as err:
        ch.exchange_declare(names.prefix + ".bad", exchange_type="no-such-type")
    assert err.value.reply_code == 503
    assert err.value.reply_text.startswith("COMMAND_INVALID")


def test_ack_unknown_delivery_tag_is_406(conn, ch):
    ch.basic_ack(delivery_tag=999)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("", exclusive=True)  # the next sync call sees the close
    assert err.value.reply_code == 406
    assert "unknown delivery tag" in err.value.reply_text
    assert conn.is_open


def test_delete_if_unused_and_if_empty(ch, conn, names):
    queue = names.queue("busy")
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_delete(queue, if_empty=True)
    assert err.value.reply_code == 406
    ch = conn.channel()
    ch.basic_consume(queue, lambda *a: None, auto_ack=True)
    other = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        other.queue_delete(queue, if_unused=True)
    assert err.value.reply_code == 406
    assert conn.is_open


def test_many_channels_on_one_connection(conn, names):
    queue = names.queue("q")
    chans = [conn.channel() for _ in range(20)]
    chans[0].queue_declare(queue)
    for i, c in enumerate(chans):
        c.basic_publish("", queue, str(i).encode())
    assert_count(chans[0], queue, 20)
    got = []
    for c in chans:
        m, _, b = c.basic_get(queue, auto_ack=True)
        got.append(int(b))
    assert sorted(got) == list(range(20))
    for c in chans:
        c.close()
    assert conn.is_open
