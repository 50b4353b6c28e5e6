"""Transactions: tx.select / tx.commit / tx.rollback for publishes and acks."""

import time

import pika
import pytest

from conftest import QUIET_PERIOD, assert_count, bodies, message_count


def test_commit_publishes_rollback_discards(connect_fn, names):
    queue = names.queue("tx")
    conn = connect_fn()
    ch = conn.channel()
    ch.queue_declare(queue)
    observer = connect_fn().channel()

    ch.tx_select()
    ch.basic_publish("", queue, b"rolled-back-1")
    ch.basic_publish("", queue, b"rolled-back-2")
    time.sleep(QUIET_PERIOD)
    assert message_count(observer, queue) == 0, "uncommitted publishes must not be visible"
    ch.tx_rollback()
    assert message_count(observer, queue) == 0

    ch.basic_publish("", queue, b"committed-1")
    ch.basic_publish("", queue, b"committed-2")
    time.sleep(QUIET_PERIOD)
    assert message_count(observer, queue) == 0
    ch.tx_commit()
    assert bodies(observer, queue) == [b"committed-1", b"committed-2"]

    # The channel stays transactional: an empty commit and another round work.
    ch.tx_commit()
    ch.basic_publish("", queue, b"committed-3")
    ch.tx_commit()
    assert bodies(observer, queue) == [b"committed-3"]


def test_rolled_back_ack_is_not_applied(connect_fn, names):
    queue = names.queue("tx")
    setup = connect_fn().channel()
    setup.queue_declare(queue)
    setup.basic_publish("", queue, b"work")

    conn = connect_fn()
    ch = conn.channel()
    ch.tx_select()
    method, _, body = ch.basic_get(queue, auto_ack=False)
    assert body == b"work"
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()
    # The ack was discarded: the message is still unacked on this channel and
    # comes back, redelivered, once the channel goes away.
    ch.close()

    method, _, body = setup.basic_get(queue, auto_ack=False)
    assert body == b"work"
    assert method.redelivered is True
    setup.basic_ack(method.delivery_tag)
    assert_count(setup, queue, 0)


def test_committed_ack_is_applied(connect_fn, names):
    queue = names.queue("tx")
    setup = connect_fn().channel()
    setup.queue_declare(queue)
    setup.basic_publish("", queue, b"work")

    ch = connect_fn().channel()
    ch.tx_select()
    method, _, _ = ch.basic_get(queue, auto_ack=False)
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.close()
    assert_count(setup, queue, 0)


def test_publish_and_ack_in_one_transaction(connect_fn, names):
    """Consume from one queue and publish to another atomically."""
    src, dst = names.queue("src"), names.queue("dst")
    setup = connect_fn().channel()
    setup.queue_declare(src)
    setup.queue_declare(dst)
    setup.basic_publish("", src, b"in")

    ch = connect_fn().channel()
    ch.tx_select()
    method, _, body = ch.basic_get(src, auto_ack=False)
    ch.basic_publish("", dst, body + b"-processed")
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.close()
    assert_count(setup, src, 0)
    assert bodies(setup, dst) == [b"in-processed"]


def test_commit_without_select_is_precondition_failed(conn, ch):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.tx_commit()
    assert err.value.reply_code == 406
    assert conn.is_open
