"""Tutorial 2: work queues - durable queue, persistent messages, prefetch_count=1,
manual acks, competing consumers fairly dispatched."""

import time

import pika

from conftest import RECEIVE_TIMEOUT, assert_count, wait_until

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def test_fair_dispatch_skips_busy_worker(connect_fn, names):
    """With prefetch_count=1, a worker holding an unacked message gets nothing more:
    every other task goes to the idle worker."""
    queue = names.queue("task_queue")
    busy_conn, idle_conn = connect_fn(), connect_fn()
    busy, idle = busy_conn.channel(), idle_conn.channel()
    busy.queue_declare(queue, durable=True)
    idle.queue_declare(queue, durable=True)
    busy.basic_qos(prefetch_count=1)
    idle.basic_qos(prefetch_count=1)

    busy_got, idle_got = [], []

    def on_busy(ch, method, props, body):
        busy_got.append(method.delivery_tag)  # never acked while the test runs

    def on_idle(ch, method, props, body):
        idle_got.append(body)
        ch.basic_ack(delivery_tag=method.delivery_tag)

    busy.basic_consume(queue, on_busy)
    # Make sure the busy worker holds its one task before the idle one starts.
    busy.basic_publish("", queue, b"task-0", PERSISTENT)
    wait_until(lambda: busy_got, conn=busy_conn, what="busy worker's first task")

    idle.basic_consume(queue, on_idle)
    for i in range(1, 10):
        idle.basic_publish("", queue, ("task-%d" % i).encode(), PERSISTENT)

    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while len(idle_got) < 9 and time.monotonic() < deadline:
        idle_conn.process_data_events(time_limit=0.05)
        busy_conn.process_data_events(time_limit=0)

    assert len(busy_got) == 1, "busy worker with an unacked task got more: %r" % busy_got
    assert idle_got == [("task-%d" % i).encode() for i in range(1, 10)]

    # Now the busy worker finishes; the queue is drained.
    busy.basic_ack(busy_got[0])
    busy_conn.process_data_events(time_limit=0.1)
    idle.basic_cancel(idle.consumer_tags[0])
    busy.basic_cancel(busy.consumer_tags[0])
    assert_count(idle, queue, 0)


def test_competing_consumers_share_work(connect_fn, names):
    """Two workers acking promptly both get work; every task is delivered exactly once."""
    queue = names.queue("task_queue")
    c1, c2 = connect_fn(), connect_fn()
    w1, w2 = c1.channel(), c2.channel()
    w1.queue_declare(queue, durable=True)
    w1.basic_qos(prefetch_count=1)
    w2.basic_qos(prefetch_count=1)
    got = {1: [], 2: []}

    def worker(n):
        def on_message(ch, method, props, body):
            got[n].append(body)
            ch.basic_ack(delivery_tag=method.delivery_tag)

        return on_message

    w1.basic_consume(queue, worker(1))
    w2.basic_consume(queue, worker(2))
    # Let both consumers register before publishing.
    c1.process_data_events(time_limit=0.05)
    c2.process_data_events(time_limit=0.05)
    total = 40
    for i in range(total):
        w1.basic_publish("", queue, str(i).encode(), PERSISTENT)

    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while len(got[1]) + len(got[2]) < total and time.monotonic() < deadline:
        c1.process_data_events(time_limit=0.02)
        c2.process_data_events(time_limit=0.02)

    everything = sorted(int(b) for b in got[1] + got[2])
    assert everything == list(range(total)), "lost or duplicated tasks"
    assert got[1] and got[2], "one worker got no work: %r" % got
    # Each worker sees its share in publish order.
    assert [int(b) for b in got[1]] == sorted(int(b) for b in got[1])
    assert [int(b) for b in got[2]] == sorted(int(b) for b in got[2])


def test_unacked_task_is_redelivered_when_worker_dies(connect_fn, names):
    """A task that a worker took but never acked goes to another worker, marked redelivered."""
    queue = names.queue("task_queue")
    dying = connect_fn()
    ch = dying.channel()
    ch.queue_declare(queue, durable=True)
    ch.basic_qos(prefetch_count=1)
    ch.basic_publish("", queue, b"important", PERSISTENT)
    method, _, body = ch.basic_get(queue, auto_ack=False)
    assert body == b"important" and method.redelivered is False
    dying.close()  # worker dies without acking

    survivor = connect_fn().channel()
    method, props, body = survivor.basic_get(queue, auto_ack=False)
    assert body == b"important"
    assert method.redelivered is True
    assert props.delivery_mode == 2
    survivor.basic_ack(method.delivery_tag)
    assert_count(survivor, queue, 0)
