"""basic.reject and basic.nack, with and without requeue; the redelivered flag."""

from conftest import bodies, consume_n, assert_count, wait_until


def test_reject_requeue_sets_redelivered(ch, names):
    queue = names.queue("q")
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"again")

    method, _, body = ch.basic_get(queue, auto_ack=False)
    assert method.redelivered is False
    ch.basic_reject(method.delivery_tag, requeue=True)

    method, _, body = ch.basic_get(queue, auto_ack=False)
    assert body == b"again"
    assert method.redelivered is True
    ch.basic_ack(method.delivery_tag)
    assert_count(ch, queue, 0)


def test_nack_multiple_requeue_keeps_order(ch, names):
    queue = names.queue("q")
    ch.queue_declare(queue)
    for i in range(5):
        ch.basic_publish("", queue, str(i).encode())
    ch.basic_qos(prefetch_count=5)
    got = consume_n(ch, queue, 5, auto_ack=False)
    # consume_n cancels its consumer (pika nacks anything buffered); nack the five explicitly.
    ch.basic_nack(got[-1][0].delivery_tag, multiple=True, requeue=True)

    again = consume_n(ch, queue, 5, auto_ack=False)
    assert [b for _, _, b in again] == [str(i).encode() for i in range(5)], "requeued in original order"
    assert all(m.redelivered for m, _, _ in again)
    ch.basic_ack(again[-1][0].delivery_tag, multiple=True)
    assert_count(ch, queue, 0)


def test_reject_and_nack_without_requeue_drop(ch, names):
    queue = names.queue("q")
    ch.queue_declare(queue)
    for body in (b"a", b"b", b"c"):
        ch.basic_publish("", queue, body)
    ma, _, _ = ch.basic_get(queue, auto_ack=False)
    mb, _, _ = ch.basic_get(queue, auto_ack=False)
    ch.basic_reject(ma.delivery_tag, requeue=False)
    ch.basic_nack(mb.delivery_tag, requeue=False)
    assert bodies(ch, queue) == [b"c"]


def test_recover_requeues_unacked(ch, names):
    queue = names.queue("q")
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"r")
    method, _, _ = ch.basic_get(queue, auto_ack=False)
    ch.basic_recover(requeue=True)
    method, _, body = ch.basic_get(queue, auto_ack=False)
    assert body == b"r" and method.redelivered is True
    ch.basic_ack(method.delivery_tag)


def test_cancel_requeues_unacked_in_order(connect_fn, names):
    queue = names.queue("q")
    conn = connect_fn()
    ch = conn.channel()
    ch.queue_declare(queue)
    for i in range(3):
        ch.basic_publish("", queue, str(i).encode())
    got = []
    tag = ch.basic_consume(queue, lambda c, m, p, b: got.append(b))
    wait_until(lambda: len(got) == 3, conn=conn, what="3 deliveries")
    ch.basic_cancel(tag)
    ch.close()  # unacked deliveries go back to the queue
    other = connect_fn().channel()
    again = [(m.redelivered, b) for m, _, b in consume_n(other, queue, 3, auto_ack=True)]
    assert again == [(True, b"0"), (True, b"1"), (True, b"2")]
