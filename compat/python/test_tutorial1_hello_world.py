"""Tutorial 1: "Hello World!" - publish to a named queue through the default exchange."""

import decimal

import pika

from conftest import consume_n


def test_hello_world(ch, names):
    queue = names.queue("hello")
    ok = ch.queue_declare(queue)
    assert ok.method.queue == queue
    assert ok.method.message_count == 0
    assert ok.method.consumer_count == 0

    ch.basic_publish(exchange="", routing_key=queue, body=b"Hello World!")

    [(method, props, body)] = consume_n(ch, queue, 1)
    assert body == b"Hello World!"
    assert method.routing_key == queue
    assert method.exchange == ""
    assert method.redelivered is False


def test_properties_round_trip(ch, names):
    """Every basic property survives the broker unchanged."""
    queue = names.queue("props")
    ch.queue_declare(queue)
    sent = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"s": "text", "i": 42, "neg": -7, "b": True, "d": decimal.Decimal("1.5"), "long": 2**40, "void": None, "nested": {"k": "v"}, "list": [1, "two"]},
        delivery_mode=2,
        priority=3,
        correlation_id="corr-1",
        reply_to="reply-here",
        expiration="60000",
        message_id="msg-1",
        timestamp=1700000000,
        type="user.registered",
        user_id="guest",
        app_id="compat-tests",
    )
    ch.basic_publish(exchange="", routing_key=queue, body=b"{}", properties=sent)
    [(_, props, body)] = consume_n(ch, queue, 1)
    assert body == b"{}"
    for field in (
        "content_type",
        "content_encoding",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
    ):
        assert getattr(props, field) == getattr(sent, field), field
    assert props.headers["s"] == "text"
    assert props.headers["i"] == 42
    assert props.headers["neg"] == -7
    assert props.headers["b"] is True
    assert props.headers["d"] == decimal.Decimal("1.5")
    assert props.headers["long"] == 2**40
    assert props.headers["void"] is None
    assert props.headers["nested"] == {"k": "v"}
    assert props.headers["list"] == [1, "two"]


def test_many_messages_keep_order(ch, names):
    queue = names.queue("order")
    ch.queue_declare(queue)
    for i in range(200):
        ch.basic_publish(exchange="", routing_key=queue, body=str(i).encode())
    got = consume_n(ch, queue, 200)
    assert [int(b) for _, _, b in got] == list(range(200))
