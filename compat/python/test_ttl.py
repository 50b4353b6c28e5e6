"""Message TTL: x-message-ttl on the queue and per-message expiration."""

import time

import pika

from conftest import bodies


def test_queue_message_ttl(ch, names):
    queue = names.queue("ttl")
    ch.queue_declare(queue, arguments={"x-message-ttl": 150})
    ch.basic_publish("", queue, b"expires")
    time.sleep(0.4)
    ch.basic_publish("", queue, b"fresh")
    assert bodies(ch, queue) == [b"fresh"]


def test_per_message_expiration(ch, names):
    queue = names.queue("ttl")
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"expires", pika.BasicProperties(expiration="150"))
    ch.basic_publish("", queue, b"stays", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", queue, b"no-ttl")
    time.sleep(0.4)
    assert bodies(ch, queue) == [b"stays", b"no-ttl"]


def test_zero_ttl_without_consumer_drops(ch, names):
    queue = names.queue("ttl")
    ch.queue_declare(queue, arguments={"x-message-ttl": 0})
    ch.confirm_delivery()
    ch.basic_publish("", queue, b"now or never")
    time.sleep(0.1)
    assert bodies(ch, queue) == []


def test_unexpired_messages_are_delivered(ch, names):
    queue = names.queue("ttl")
    ch.queue_declare(queue, arguments={"x-message-ttl": 60000})
    ch.basic_publish("", queue, b"in time")
    assert bodies(ch, queue) == [b"in time"]


def test_queue_expires_when_unused(connect_fn, names):
    queue = names.queue("expiring")
    ch = connect_fn().channel()
    ch.queue_declare(queue, arguments={"x-expires": 200})
    time.sleep(0.6)
    import pytest

    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare(queue, passive=True)
    assert err.value.reply_code == 404
