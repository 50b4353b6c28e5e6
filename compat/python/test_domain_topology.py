"""The topology our own services use (issue 3, item 6): direct, fanout, topic and
headers exchanges, each with two queues. Queue and exchange names carry a per-run
prefix; binding keys are exactly the ones from the issue."""

import pika
import pytest

from conftest import bodies


@pytest.fixture
def topology(ch, names):
    t = {
        "direct": names.exchange("direct"),
        "fanout": names.exchange("fanout"),
        "topic": names.exchange("topic"),
        "headers": names.exchange("headers"),
    }
    q = {n: names.queue(n) for n in ("direct1", "direct2", "fanout1", "fanout2", "topic1", "topic2", "headers_all", "headers_any")}
    for kind, ex in t.items():
        ch.exchange_declare(ex, exchange_type=kind, durable=True)
    for name in q.values():
        ch.queue_declare(name, durable=True)
    ch.queue_bind(q["direct1"], t["direct"], routing_key="direct1")
    ch.queue_bind(q["direct2"], t["direct"], routing_key="direct2")
    ch.queue_bind(q["fanout1"], t["fanout"])
    ch.queue_bind(q["fanout2"], t["fanout"])
    ch.queue_bind(q["topic1"], t["topic"], routing_key="topic1.#")
    ch.queue_bind(q["topic2"], t["topic"], routing_key="topic2.#")
    ch.queue_bind(q["headers_all"], t["headers"], arguments={"x-match": "all", "domain": "billing", "kind": "invoice"})
    ch.queue_bind(q["headers_any"], t["headers"], arguments={"x-match": "any", "domain": "billing", "kind": "invoice"})
    ch.confirm_delivery()
    return t, q


def drain(ch, q):
    return {name: bodies(ch, queue) for name, queue in q.items()}


def expect(**nonempty):
    base = {n: [] for n in ("direct1", "direct2", "fanout1", "fanout2", "topic1", "topic2", "headers_all", "headers_any")}
    base.update(nonempty)
    return base


def test_direct(ch, topology):
    t, q = topology
    ch.basic_publish(t["direct"], "direct1", b"d1")
    ch.basic_publish(t["direct"], "direct2", b"d2")
    ch.basic_publish(t["direct"], "direct3", b"nowhere")
    assert drain(ch, q) == expect(direct1=[b"d1"], direct2=[b"d2"])


def test_fanout(ch, topology):
    t, q = topology
    ch.basic_publish(t["fanout"], "anything", b"f")
    assert drain(ch, q) == expect(fanout1=[b"f"], fanout2=[b"f"])


def test_topic(ch, topology):
    t, q = topology
    for key in ("topic1", "topic1.a", "topic1.a.b", "topic2.x", "topic3.x", "xtopic1.a", "topic12"):
        ch.basic_publish(t["topic"], key, key.encode())
    assert drain(ch, q) == expect(topic1=[b"topic1", b"topic1.a", b"topic1.a.b"], topic2=[b"topic2.x"])


def test_headers(ch, topology):
    t, q = topology
    send = lambda body, **h: ch.basic_publish(t["headers"], "", body, pika.BasicProperties(headers=h))
    send(b"both", domain="billing", kind="invoice")
    send(b"domain", domain="billing", kind="refund")
    send(b"kind", domain="shipping", kind="invoice")
    send(b"neither", domain="shipping")
    assert drain(ch, q) == expect(headers_all=[b"both"], headers_any=[b"both", b"domain", b"kind"])


def test_mandatory_publish_per_exchange(ch, topology):
    t, q = topology
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(t["direct"], "direct9", b"x", mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(t["topic"], "topic9.a", b"x", mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(t["headers"], "", b"x", pika.BasicProperties(headers={"domain": "none"}), mandatory=True)
    ch.basic_publish(t["fanout"], "", b"routed", mandatory=True)
    assert drain(ch, q) == expect(fanout1=[b"routed"], fanout2=[b"routed"])
