"""Tutorial 4: routing - a direct exchange, several bindings per queue, same key on two queues."""

from conftest import bodies


def test_direct_routing_by_severity(conn, ch, names):
    direct_logs = names.exchange("direct_logs")
    ch.exchange_declare(direct_logs, exchange_type="direct")
    ch.confirm_delivery()  # every publish below is routed before basic_publish returns

    errors_only = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(errors_only, direct_logs, routing_key="error")

    everything = ch.queue_declare("", exclusive=True).method.queue
    for severity in ("info", "warning", "error"):
        ch.queue_bind(everything, direct_logs, routing_key=severity)

    for severity in ("info", "warning", "error", "debug"):
        ch.basic_publish(direct_logs, routing_key=severity, body=severity.encode())

    assert bodies(ch, errors_only) == [b"error"]
    assert bodies(ch, everything) == [b"info", b"warning", b"error"]


def test_binding_twice_delivers_once(ch, names):
    ex = names.exchange("direct")
    ch.exchange_declare(ex, exchange_type="direct")
    ch.confirm_delivery()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, ex, routing_key="k")
    ch.queue_bind(queue, ex, routing_key="k")  # idempotent
    ch.basic_publish(ex, "k", b"once")
    assert bodies(ch, queue) == [b"once"]


def test_default_and_amq_direct_exchanges(ch, names):
    queue = names.queue("q")
    ch.queue_declare(queue)
    ch.confirm_delivery()
    ch.basic_publish("", queue, b"via default")
    ch.queue_bind(queue, "amq.direct", routing_key=queue)
    ch.basic_publish("amq.direct", queue, b"via amq.direct")
    ch.queue_unbind(queue, "amq.direct", routing_key=queue)
    assert bodies(ch, queue) == [b"via default", b"via amq.direct"]
