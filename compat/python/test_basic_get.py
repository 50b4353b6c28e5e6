"""basic.get / basic.get-ok / basic.get-empty."""

from conftest import assert_count


def test_get_empty(ch, names):
    queue = names.queue("empty")
    ch.queue_declare(queue)
    assert ch.basic_get(queue) == (None, None, None)


def test_get_ok_fields_and_ack(ch, names):
    queue = names.queue("get")
    ch.queue_declare(queue)
    for i in range(3):
        ch.basic_publish("", queue, b"m%d" % i)
    assert_count(ch, queue, 3)

    method, props, body = ch.basic_get(queue, auto_ack=False)
    assert body == b"m0"
    assert method.message_count == 2, "get-ok carries the number of messages left"
    assert method.exchange == ""
    assert method.routing_key == queue
    assert method.redelivered is False
    ch.basic_ack(method.delivery_tag)

    m1, _, b1 = ch.basic_get(queue, auto_ack=False)
    m2, _, b2 = ch.basic_get(queue, auto_ack=False)
    assert (b1, b2) == (b"m1", b"m2")
    assert m2.message_count == 0
    assert m2.delivery_tag > m1.delivery_tag > method.delivery_tag
    ch.basic_ack(m2.delivery_tag, multiple=True)  # acks m1 too
    assert ch.basic_get(queue) == (None, None, None)
    assert_count(ch, queue, 0)


def test_get_with_auto_ack_removes_message(connect_fn, names):
    queue = names.queue("get")
    ch = connect_fn().channel()
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"x")
    method, _, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"x"
    ch.close()  # nothing to requeue
    assert_count(connect_fn().channel(), queue, 0)


def test_purge(ch, names):
    queue = names.queue("purge")
    ch.queue_declare(queue)
    for i in range(7):
        ch.basic_publish("", queue, b"x")
    assert ch.queue_purge(queue).method.message_count == 7
    assert ch.basic_get(queue) == (None, None, None)
