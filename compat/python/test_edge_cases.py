"""Smaller protocol details that RabbitMQ clients depend on."""

import time

import pika
import pytest

from conftest import RECEIVE_TIMEOUT, assert_count, url_parameters, wait_until


def closed_with(code, fn):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        fn()
    assert err.value.reply_code == code, err.value
    return err.value


def test_global_qos_is_shared_by_the_channels_consumers(conn, ch, names):
    q1, q2 = names.queue("q1"), names.queue("q2")
    for q in (q1, q2):
        ch.queue_declare(q)
        for i in range(5):
            ch.basic_publish("", q, b"x")
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    ch.basic_consume(q1, lambda c, m, p, b: got.append(m.delivery_tag))
    ch.basic_consume(q2, lambda c, m, p, b: got.append(m.delivery_tag))
    wait_until(lambda: len(got) >= 3, conn=conn, what="3 deliveries")
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 3, "a global prefetch of 3 is shared by both consumers"


def test_consumer_priorities(connect_fn, names):
    q = names.queue("q")
    conn = connect_fn()
    low, high = conn.channel(), conn.channel()
    low.queue_declare(q)
    got = {"low": [], "high": []}
    low.basic_consume(q, lambda c, m, p, b: got["low"].append(b), auto_ack=True, arguments={"x-priority": 1})
    high.basic_consume(q, lambda c, m, p, b: got["high"].append(b), auto_ack=True, arguments={"x-priority": 10})
    for i in range(10):
        low.basic_publish("", q, str(i).encode())
    wait_until(lambda: len(got["low"]) + len(got["high"]) == 10, conn=conn, what="10 deliveries")
    assert len(got["high"]) == 10, "the higher-priority consumer gets everything while it can take it: %r" % got


def test_auto_delete_queue_goes_with_last_consumer(connect_fn, names):
    q = names.queue("auto")
    conn = connect_fn()
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    tag = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(tag)
    probe = connect_fn().channel()
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while True:
        try:
            probe.queue_declare(q, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404
            break
        assert time.monotonic() < deadline, "auto-delete queue survived its last consumer"
        time.sleep(0.05)


def test_queue_delete_reports_message_count(ch, names):
    q = names.queue("q")
    ch.queue_declare(q)
    ch.confirm_delivery()
    for _ in range(4):
        ch.basic_publish("", q, b"x")
    assert ch.queue_delete(q).method.message_count == 4


def test_redeclare_reports_counts(ch, names):
    q = names.queue("q")
    ch.queue_declare(q)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x")
    ok = ch.queue_declare(q)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (q, 1, 0)


def test_bind_to_missing_exchange_or_queue_is_404(conn, names):
    ch = conn.channel()
    q = names.queue("q")
    ch.queue_declare(q)
    closed_with(404, lambda: ch.queue_bind(q, names.prefix + ".no-exchange", "k"))
    ch = conn.channel()
    ex = names.exchange("x")
    ch.exchange_declare(ex, exchange_type="direct")
    closed_with(404, lambda: ch.queue_bind(names.prefix + ".no-queue", ex, "k"))
    ch = conn.channel()
    closed_with(404, lambda: ch.basic_consume(names.prefix + ".no-queue", lambda *a: None))
    ch = conn.channel()
    closed_with(404, lambda: ch.basic_get(names.prefix + ".no-queue"))
    assert conn.is_open


def test_unbind_of_missing_binding_is_ok(ch, names):
    q = names.queue("q")
    ex = names.exchange("x")
    ch.queue_declare(q)
    ch.exchange_declare(ex, exchange_type="direct")
    ch.queue_unbind(q, ex, routing_key="never-bound")
    assert ch.is_open


def test_exchange_delete_if_unused(conn, names):
    ch = conn.channel()
    q = names.queue("q")
    ex = names.exchange("x")
    ch.queue_declare(q)
    ch.exchange_declare(ex, exchange_type="fanout")
    ch.queue_bind(q, ex)
    closed_with(406, lambda: ch.exchange_delete(ex, if_unused=True))
    ch = conn.channel()
    ch.queue_unbind(q, ex)
    ch.exchange_delete(ex, if_unused=True)
    closed_with(404, lambda: ch.exchange_declare(ex, passive=True))


def test_deleting_a_queue_removes_its_bindings(ch, names):
    q = names.queue("q")
    ex = names.exchange("x")
    ch.exchange_declare(ex, exchange_type="fanout")
    ch.queue_declare(q)
    ch.queue_bind(q, ex)
    ch.queue_delete(q)
    ch.queue_declare(q)  # same name, fresh queue: no bindings
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(ex, "", b"x", mandatory=True)


def test_user_id_mismatch_is_406(conn, ch, names):
    q = names.queue("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="someone-else"))
    closed_with(406, lambda: ch.queue_declare(q, passive=True))


def test_invalid_expiration_is_406(conn, ch, names):
    q = names.queue("q")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="not-a-number"))
    closed_with(406, lambda: ch.queue_declare(q, passive=True))


def test_unknown_vhost_is_refused(connect_fn):
    params = url_parameters(virtual_host="compat-no-such-vhost")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as err:
        pika.BlockingConnection(params)
    assert "530" in str(err.value) or "NOT_ALLOWED" in str(err.value)


def test_channel_numbers_can_be_reused(conn, names):
    q = names.queue("q")
    for _ in range(3):
        ch = conn.channel(channel_number=7)
        ch.queue_declare(q)
        ch.close()
    closed_with(404, lambda: conn.channel(channel_number=7).queue_declare(names.prefix + ".none", passive=True))
    ch = conn.channel(channel_number=7)
    assert ch.queue_declare(q, passive=True).method.queue == q


def test_empty_body_and_no_properties(ch, names):
    q = names.queue("q")
    ch.queue_declare(q)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"")
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert method is not None
    assert body == b""
    assert props.headers is None and props.content_type is None


def test_redelivered_after_recover_and_ack_multiple_across_gets(ch, names):
    q = names.queue("q")
    ch.queue_declare(q)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    tags = [ch.basic_get(q, auto_ack=False)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[-1], multiple=True, requeue=True)
    again = [ch.basic_get(q, auto_ack=False) for _ in range(3)]
    assert [b for _, _, b in again] == [b"0", b"1", b"2"]
    assert all(m.redelivered for m, _, _ in again)
    assert [m.delivery_tag for m, _, _ in again] == [tags[-1] + 1, tags[-1] + 2, tags[-1] + 3]
    ch.basic_ack(0, multiple=True)  # delivery-tag 0 with multiple acks everything outstanding
    assert_count(ch, q, 0)
    ch.close()


def test_message_count_excludes_unacked(connect_fn, names):
    q = names.queue("q")
    ch = connect_fn().channel()
    ch.queue_declare(q)
    ch.confirm_delivery()
    for _ in range(3):
        ch.basic_publish("", q, b"x")
    ch.basic_get(q, auto_ack=False)
    assert_count(ch, q, 2)


def test_redeclare_exclusive_queue_as_non_exclusive_is_405(conn, ch, names):
    q = names.queue("ex")
    ch.queue_declare(q, exclusive=True)
    err = closed_with(405, lambda: conn.channel().queue_declare(q, exclusive=False))
    assert err.reply_text.startswith("RESOURCE_LOCKED")


def test_x_max_priority_above_255_is_406(ch, names):
    closed_with(406, lambda: ch.queue_declare(names.queue("prio"), arguments={"x-max-priority": 300}))


def test_prefetch_size_is_540_not_implemented(connect_fn):
    ch = connect_fn().channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as err:
        ch.basic_qos(prefetch_size=10)
    assert err.value.reply_code == 540
    assert err.value.reply_text.startswith("NOT_IMPLEMENTED")


def test_recover_without_requeue_is_540_not_implemented(connect_fn):
    ch = connect_fn().channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as err:
        ch.basic_recover(requeue=False)
    assert err.value.reply_code == 540

