"""Tutorial 6: RPC - a server consuming a request queue, clients with an exclusive
server-named reply queue, reply_to and correlation_id."""

import threading
import time
import uuid

import pika

from conftest import RECEIVE_TIMEOUT, connect


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class RpcServer(threading.Thread):
    """Runs on its own connection in its own thread, like a separate process would."""

    def __init__(self, queue):
        super().__init__(daemon=True)
        self.queue = queue
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = connect()
            try:
                ch = conn.channel()
                ch.queue_declare(self.queue)
                ch.basic_qos(prefetch_count=1)

                def on_request(ch, method, props, body):
                    response = str(fib(int(body))).encode()
                    ch.basic_publish(
                        exchange="",
                        routing_key=props.reply_to,
                        properties=pika.BasicProperties(correlation_id=props.correlation_id),
                        body=response,
                    )
                    ch.basic_ack(delivery_tag=method.delivery_tag)

                ch.basic_consume(self.queue, on_request)
                self.ready.set()
                while not self.stop.is_set():
                    conn.process_data_events(time_limit=0.05)
            finally:
                conn.close()
        except Exception as e:  # reported by the test thread
            self.error = e
            self.ready.set()


class FibonacciRpcClient:
    def __init__(self, conn, rpc_queue):
        self.conn = conn
        self.rpc_queue = rpc_queue
        self.ch = conn.channel()
        result = self.ch.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.ch.basic_consume(self.callback_queue, self.on_response, auto_ack=True)
        self.responses = {}

    def on_response(self, ch, method, props, body):
        self.responses[props.correlation_id] = body

    def send(self, n):
        corr_id = str(uuid.uuid4())
        self.ch.basic_publish(
            exchange="",
            routing_key=self.rpc_queue,
            properties=pika.BasicProperties(reply_to=self.callback_queue, correlation_id=corr_id),
            body=str(n).encode(),
        )
        return corr_id

    def wait(self, corr_ids):
        deadline = time.monotonic() + RECEIVE_TIMEOUT
        while not all(c in self.responses for c in corr_ids):
            assert time.monotonic() < deadline, "RPC replies missing: %r" % self.responses
            self.conn.process_data_events(time_limit=0.05)
        return [self.responses[c] for c in corr_ids]


def test_rpc_round_trips(connect_fn, names):
    rpc_queue = names.queue("rpc_queue")
    server = RpcServer(rpc_queue)
    server.start()
    assert server.ready.wait(RECEIVE_TIMEOUT), "RPC server did not start"
    assert server.error is None, server.error
    try:
        client = FibonacciRpcClient(connect_fn(), rpc_queue)
        assert client.callback_queue.startswith("amq.gen-")

        # One call at a time, as in the tutorial.
        for n in (0, 1, 10, 30):
            [reply] = client.wait([client.send(n)])
            assert int(reply) == fib(n)

        # Many calls in flight: replies are matched by correlation_id.
        calls = {client.send(n): n for n in range(20)}
        replies = client.wait(list(calls))
        assert [int(r) for r in replies] == [fib(n) for n in calls.values()]
    finally:
        server.stop.set()
        server.join(RECEIVE_TIMEOUT)
    assert server.error is None, server.error


def test_two_clients_each_get_only_their_replies(connect_fn, names):
    rpc_queue = names.queue("rpc_queue")
    server = RpcServer(rpc_queue)
    server.start()
    assert server.ready.wait(RECEIVE_TIMEOUT)
    try:
        conn = connect_fn()
        a = FibonacciRpcClient(conn, rpc_queue)
        b = FibonacciRpcClient(conn, rpc_queue)
        ca = [a.send(n) for n in (5, 6, 7)]
        cb = [b.send(n) for n in (8, 9)]
        assert [int(r) for r in a.wait(ca)] == [5, 8, 13]
        assert [int(r) for r in b.wait(cb)] == [21, 34]
        assert set(a.responses) == set(ca)
        assert set(b.responses) == set(cb)
    finally:
        server.stop.set()
        server.join(RECEIVE_TIMEOUT)
    assert server.error is None, server.error


def test_direct_reply_to(ch, conn, names):
    """RabbitMQ's direct reply-to pseudo queue (advertised as the direct_reply_to capability)."""
    rpc_queue = names.queue("rpc_queue")
    ch.queue_declare(rpc_queue)
    replies = []
    ch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((p, b)), auto_ack=True)
    ch.basic_publish(
        "",
        rpc_queue,
        b"ping",
        pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"),
    )

    server_conn = connect()
    try:
        sch = server_conn.channel()
        method, props, body = sch.basic_get(rpc_queue, auto_ack=True)
        assert body == b"ping"
        assert props.reply_to.startswith("amq.rabbitmq.reply-to."), props.reply_to
        sch.basic_publish("", props.reply_to, b"pong", pika.BasicProperties(correlation_id=props.correlation_id))
    finally:
        server_conn.close()

    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while not replies and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert [(p.correlation_id, b) for p, b in replies] == [("c1", b"pong")]
