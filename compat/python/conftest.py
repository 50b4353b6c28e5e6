"""Shared fixtures for the pika compatibility suite.

Every test talks to the broker named by the AMQP_URL environment variable
(RabbitMQ or eventbus-broker). Each test gets names that are unique to the
run, and everything it declares is deleted afterwards, so the suite can run
again and again against a long-lived RabbitMQ.

Every blocking wait is bounded: sockets time out, consume loops give up after
an inactivity timeout, and pytest-timeout (pytest.ini) kills a hung test.
"""

import os
import time
import uuid

import pika
import pytest

AMQP_URL = os.environ.get("AMQP_URL")

# How long a test waits for a message that should arrive before it fails.
RECEIVE_TIMEOUT = 5.0
# How long a test waits to be sure that a message does NOT arrive.
QUIET_PERIOD = 0.3


def url_parameters(url=None, **overrides):
    """pika parameters for AMQP_URL with bounded timeouts everywhere."""
    if not (url or AMQP_URL):
        pytest.fail("AMQP_URL is not set (e.g. amqp://guest:guest@127.0.0.1:5672/)")
    params = pika.URLParameters(url or AMQP_URL)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.blocked_connection_timeout = 10
    params.heartbeat = 30
    for key, value in overrides.items():
        setattr(params, key, value)
    return params


def connect(url=None, **overrides):
    return pika.BlockingConnection(url_parameters(url, **overrides))


class Names:
    """Hands out per-run unique names and deletes what was declared."""

    def __init__(self, test_name):
        self.prefix = "compat.py.%s.%s" % (test_name, uuid.uuid4().hex[:8])
        self.queues = []
        self.exchanges = []

    def queue(self, name):
        full = "%s.%s" % (self.prefix, name)
        self.queues.append(full)
        return full

    def exchange(self, name):
        full = "%s.%s" % (self.prefix, name)
        self.exchanges.append(full)
        return full

    def cleanup(self):
        if not (self.queues or self.exchanges):
            return
        conn = connect()
        try:
            ch = conn.channel()
            for q in self.queues:
                if not ch.is_open:
                    ch = conn.channel()
                try:
                    ch.queue_delete(q)
                except pika.exceptions.ChannelClosedByBroker:
                    pass
            for x in self.exchanges:
                if not ch.is_open:
                    ch = conn.channel()
                try:
                    ch.exchange_delete(x)
                except pika.exceptions.ChannelClosedByBroker:
                    pass
        finally:
            close_quietly(conn)


def close_quietly(conn):
    try:
        if conn.is_open:
            conn.close()
    except Exception:  # noqa: BLE001 - teardown must not mask the real failure
        pass


@pytest.fixture
def names(request):
    n = Names(request.node.name.replace("[", ".").replace("]", ""))
    yield n
    n.cleanup()


@pytest.fixture
def conn():
    c = connect()
    yield c
    close_quietly(c)


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def connect_fn():
    """Open extra connections inside a test; all are closed at teardown."""
    opened = []

    def _connect(url=None, **overrides):
        c = connect(url, **overrides)
        opened.append(c)
        return c

    yield _connect
    for c in opened:
        close_quietly(c)


def get_all(ch, queue, auto_ack=True, limit=10000):
    """basic.get until get-empty; returns [(method, properties, body)]."""
    out = []
    for _ in range(limit):
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is None:
            return out
        out.append((method, props, body))
    raise AssertionError("queue %s did not run dry after %d gets" % (queue, limit))


def bodies(ch, queue):
    return [body for _, _, body in get_all(ch, queue)]


def consume_n(ch, queue, count, auto_ack=True, timeout=RECEIVE_TIMEOUT):
    """Consume exactly `count` messages or fail after `timeout` without one."""
    got = []
    deadline = time.monotonic() + timeout
    for method, props, body in ch.consume(queue, auto_ack=auto_ack, inactivity_timeout=0.1):
        if method is not None:
            got.append((method, props, body))
            deadline = time.monotonic() + timeout
            if len(got) == count:
                break
        elif time.monotonic() > deadline:
            break
    ch.cancel()
    assert len(got) == count, "expected %d messages from %s, got %d: %r" % (
        count,
        queue,
        len(got),
        [b for _, _, b in got],
    )
    return got


def message_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def wait_until(predicate, timeout=RECEIVE_TIMEOUT, conn=None, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if conn is not None:
            conn.process_data_events(time_limit=0.05)
        else:
            time.sleep(0.05)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def assert_count(ch, queue, expected, timeout=2.0):
    """The queue's message count (queue.declare passive) reaches `expected`.

    Publishes and acks are asynchronous, so the count is polled briefly."""
    deadline = time.monotonic() + timeout
    while True:
        count = message_count(ch, queue)
        if count == expected or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert count == expected, "queue %s holds %d messages, expected %d" % (queue, count, expected)


# After this many tests in a row time out the broker is taken to be hung and the
# run stops, instead of spending the per-test timeout on every remaining test.
MAX_CONSECUTIVE_TIMEOUTS = 5
_consecutive_timeouts = 0


def pytest_runtest_logreport(report):
    global _consecutive_timeouts
    if report.when != "call" and not report.failed:
        return
    if report.failed and "Timeout (>" in str(report.longrepr):
        _consecutive_timeouts += 1
    elif report.when == "call":
        _consecutive_timeouts = 0


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    if _consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS:
        item.session.shouldstop = "%d tests in a row timed out: the broker looks hung" % _consecutive_timeouts
