"""Headers exchange: x-match all / any; x- prefixed keys are not matched."""

import pika
import pytest

from conftest import bodies


def hdrs(**h):
    return pika.BasicProperties(headers=h or None)


@pytest.fixture
def headers_setup(ch, names):
    ex = names.exchange("headers")
    ch.exchange_declare(ex, exchange_type="headers")
    ch.confirm_delivery()
    q_all = ch.queue_declare("", exclusive=True).method.queue
    q_any = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_all, ex, arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(q_any, ex, arguments={"x-match": "any", "format": "pdf", "type": "log"})
    return ex, q_all, q_any


def test_x_match_all_and_any(ch, headers_setup):
    ex, q_all, q_any = headers_setup
    cases = [
        ("both", {"format": "pdf", "type": "report"}, True, True),
        ("both+extra", {"format": "pdf", "type": "report", "extra": 1}, True, True),
        ("format-only", {"format": "pdf"}, False, True),
        ("type-log", {"type": "log"}, False, True),
        ("wrong-values", {"format": "zip", "type": "report"}, False, False),
        ("none", {}, False, False),
        ("x-keys-ignored", {"x-format": "pdf"}, False, False),
    ]
    for name, headers, _, _ in cases:
        ch.basic_publish(ex, "routing-key-ignored", name.encode(), hdrs(**headers))
    assert bodies(ch, q_all) == [n.encode() for n, _, a, _ in cases if a]
    assert bodies(ch, q_any) == [n.encode() for n, _, _, b in cases if b]


def test_default_x_match_is_all_and_empty_value_matches_presence(ch, names):
    ex = names.exchange("headers")
    ch.exchange_declare(ex, exchange_type="headers")
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ex, arguments={"a": 1, "b": "two"})  # no x-match: all
    ch.basic_publish(ex, "", b"yes", hdrs(a=1, b="two"))
    ch.basic_publish(ex, "", b"no", hdrs(a=1))
    ch.basic_publish(ex, "", b"no-type", hdrs(a="1", b="two"))
    assert bodies(ch, q) == [b"yes"]


def test_amq_match_exchange(ch, names):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    key = names.prefix
    ch.queue_bind(q, "amq.match", arguments={"x-match": "all", "run": key})
    ch.basic_publish("amq.match", "", b"hit", hdrs(run=key))
    ch.basic_publish("amq.match", "", b"miss", hdrs(run="other"))
    ch.queue_unbind(q, "amq.match", arguments={"x-match": "all", "run": key})
    assert bodies(ch, q) == [b"hit"]
