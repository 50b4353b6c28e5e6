"""Bodies larger than frame-max are split into body frames and reassembled."""

import hashlib
import os

import pytest

from conftest import consume_n


@pytest.mark.parametrize("size", [0, 1, 4096, 131072 - 9, 131072 - 8, 131072 - 7, 131072 * 3 + 5, 1024 * 1024])
def test_round_trip_by_size(conn, ch, names, size):
    frame_max = conn._impl.params.frame_max
    assert frame_max >= 4096
    queue = names.queue("big")
    ch.queue_declare(queue)
    body = os.urandom(size)
    ch.basic_publish("", queue, body)
    [(_, _, got)] = consume_n(ch, queue, 1)
    assert len(got) == size
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()


def test_one_mib_through_get_and_confirms(ch, names):
    queue = names.queue("big")
    ch.queue_declare(queue)
    ch.confirm_delivery()
    body = os.urandom(1024 * 1024)
    for _ in range(3):
        ch.basic_publish("", queue, body)
    for _ in range(3):
        method, _, got = ch.basic_get(queue, auto_ack=True)
        assert got == body


def test_small_frame_max_splits_more(connect_fn, names):
    """Negotiate the protocol minimum frame size (4096) so even 64 KiB is many frames."""
    conn = connect_fn(frame_max=4096)
    assert conn._impl.params.frame_max == 4096
    ch = conn.channel()
    queue = names.queue("big")
    ch.queue_declare(queue)
    body = os.urandom(64 * 1024 + 17)
    ch.basic_publish("", queue, body)
    [(_, _, got)] = consume_n(ch, queue, 1)
    assert got == body
