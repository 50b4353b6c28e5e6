"""Tutorial 5: topics - `*` matches exactly one word, `#` zero or more words."""

import pytest

from conftest import bodies

# The routing keys of the RabbitMQ tutorial and where they must end up.
Q1 = ("*.orange.*",)
Q2 = ("*.*.rabbit", "lazy.#")
CASES = [
    ("quick.orange.rabbit", True, True),
    ("lazy.orange.elephant", True, True),
    ("quick.orange.fox", True, False),
    ("lazy.brown.fox", False, True),
    ("lazy.pink.rabbit", False, True),  # matches both Q2 bindings, delivered once
    ("quick.brown.fox", False, False),
    ("orange", False, False),
    ("quick.orange.male.rabbit", False, False),
    ("lazy.orange.male.rabbit", False, True),
    ("lazy", False, True),  # '#' matches zero words
]


def test_tutorial_topic_table(ch, names):
    topic_logs = names.exchange("topic_logs")
    ch.exchange_declare(topic_logs, exchange_type="topic")
    ch.confirm_delivery()
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    for key in Q1:
        ch.queue_bind(q1, topic_logs, routing_key=key)
    for key in Q2:
        ch.queue_bind(q2, topic_logs, routing_key=key)

    for key, _, _ in CASES:
        ch.basic_publish(topic_logs, key, key.encode())

    assert bodies(ch, q1) == [k.encode() for k, in1, _ in CASES if in1]
    assert bodies(ch, q2) == [k.encode() for k, _, in2 in CASES if in2]


@pytest.mark.parametrize(
    "pattern,matches,misses",
    [
        ("#", ["", "a", "a.b.c"], []),
        ("*", ["a"], ["a.b", ""]),  # an empty key has no words
        ("a.*.c", ["a.b.c", "a..c"], ["a.c", "a.b.b.c"]),
        ("a.#.c", ["a.c", "a.b.c", "a.b.b.c"], ["a.b", "b.c"]),
        ("#.c", ["c", "a.c", "a.b.c"], ["c.a"]),
        ("a.#", ["a", "a.b", "a.b.c"], ["b.a", "ab"]),
        ("*.#", ["a", "a.b"], [""]),
        ("#.#", ["", "a", "a.b"], []),
        ("a.b", ["a.b"], ["a.b.c", "a", "a.bb"]),
    ],
)
def test_topic_wildcards(ch, names, pattern, matches, misses):
    ex = names.exchange("topic")
    ch.exchange_declare(ex, exchange_type="topic")
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ex, routing_key=pattern)
    for key in matches + misses:
        ch.basic_publish(ex, key, ("key=" + key).encode())
    assert bodies(ch, q) == [("key=" + k).encode() for k in matches]


def test_amq_topic_exchange(ch, names):
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    key = names.prefix + ".*.created"
    ch.queue_bind(q, "amq.topic", routing_key=key)
    ch.basic_publish("amq.topic", names.prefix + ".user.created", b"yes")
    ch.basic_publish("amq.topic", names.prefix + ".user.deleted", b"no")
    ch.queue_unbind(q, "amq.topic", routing_key=key)
    assert bodies(ch, q) == [b"yes"]
