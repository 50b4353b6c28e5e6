"""Dead-lettering: x-dead-letter-exchange / x-dead-letter-routing-key and the
x-death header as RabbitMQ writes it."""

import time

import pika

from conftest import RECEIVE_TIMEOUT, bodies, get_all


def declare_dlx(ch, names, **source_args):
    dlx = names.exchange("dlx")
    ch.exchange_declare(dlx, exchange_type="fanout")
    dlq = names.queue("dead")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    src = names.queue("work")
    args = {"x-dead-letter-exchange": dlx}
    args.update(source_args)
    ch.queue_declare(src, arguments=args)
    return dlx, dlq, src


def wait_for_dead(ch, dlq, count=1):
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    got = []
    while len(got) < count:
        assert time.monotonic() < deadline, "dead letters missing from %s: %r" % (dlq, got)
        got += get_all(ch, dlq)
        if len(got) < count:
            time.sleep(0.05)
    return got


def assert_x_death(props, reason, queue, exchange, routing_keys, count=1):
    x_death = props.headers["x-death"]
    assert isinstance(x_death, list) and len(x_death) == 1, x_death
    entry = x_death[0]
    assert entry["reason"] == reason
    assert entry["queue"] == queue
    assert entry["exchange"] == exchange
    assert entry["routing-keys"] == routing_keys
    assert entry["count"] == count
    assert "time" in entry
    assert props.headers["x-first-death-reason"] == reason
    assert props.headers["x-first-death-queue"] == queue
    assert props.headers["x-first-death-exchange"] == exchange


def test_rejected_message_is_dead_lettered_with_x_death(ch, names):
    dlx, dlq, src = declare_dlx(ch, names)
    ch.basic_publish("", src, b"poison", pika.BasicProperties(headers={"keep": "me"}, message_id="m-1"))
    method, _, _ = ch.basic_get(src, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)

    [(method, props, body)] = wait_for_dead(ch, dlq)
    assert body == b"poison"
    assert method.exchange == dlx
    assert method.routing_key == src, "without x-dead-letter-routing-key the original key is kept"
    assert props.message_id == "m-1"
    assert props.headers["keep"] == "me"
    assert_x_death(props, "rejected", src, "", [src])
    assert bodies(ch, src) == []


def test_nack_with_dead_letter_routing_key(ch, names):
    dlx = names.exchange("dlx")
    ch.exchange_declare(dlx, exchange_type="direct")
    dlq = names.queue("dead")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx, routing_key="dead-key")
    src = names.queue("work")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead-key"})
    ex = names.exchange("in")
    ch.exchange_declare(ex, exchange_type="direct")
    ch.queue_bind(src, ex, routing_key="orig-key")

    ch.basic_publish(ex, "orig-key", b"nacked")
    method, _, _ = ch.basic_get(src, auto_ack=False)
    ch.basic_nack(method.delivery_tag, requeue=False)

    [(method, props, body)] = wait_for_dead(ch, dlq)
    assert body == b"nacked"
    assert method.routing_key == "dead-key"
    assert_x_death(props, "rejected", src, ex, ["orig-key"])


def test_expired_message_is_dead_lettered(ch, names):
    dlx, dlq, src = declare_dlx(ch, names, **{"x-message-ttl": 100})
    ch.basic_publish("", src, b"too late")
    [(_, props, body)] = wait_for_dead(ch, dlq)
    assert body == b"too late"
    assert_x_death(props, "expired", src, "", [src])


def test_per_message_expiration_dead_letters_with_original_expiration(ch, names):
    dlx, dlq, src = declare_dlx(ch, names)
    ch.basic_publish("", src, b"short-lived", pika.BasicProperties(expiration="100"))
    [(_, props, body)] = wait_for_dead(ch, dlq)
    assert body == b"short-lived"
    assert props.expiration is None, "the expiration property is removed when dead-lettered"
    assert props.headers["x-death"][0]["original-expiration"] == "100"
    assert_x_death(props, "expired", src, "", [src])


def test_x_death_count_increments_on_a_dead_letter_cycle(ch, names):
    """work -> (reject) -> dlx -> retry queue with TTL -> (expire) -> back to work."""
    work = names.queue("work")
    retry = names.queue("retry")
    work_dlx = names.exchange("work-dlx")
    retry_dlx = names.exchange("retry-dlx")
    ch.exchange_declare(work_dlx, exchange_type="fanout")
    ch.exchange_declare(retry_dlx, exchange_type="fanout")
    ch.queue_declare(work, arguments={"x-dead-letter-exchange": work_dlx})
    ch.queue_declare(retry, arguments={"x-dead-letter-exchange": retry_dlx, "x-message-ttl": 50})
    ch.queue_bind(retry, work_dlx)
    ch.queue_bind(work, retry_dlx)

    ch.basic_publish("", work, b"retry me")
    for attempt in (1, 2):
        deadline = time.monotonic() + RECEIVE_TIMEOUT
        while True:
            method, props, body = ch.basic_get(work, auto_ack=False)
            if method is not None:
                break
            assert time.monotonic() < deadline, "message did not come back for attempt %d" % attempt
            time.sleep(0.05)
        if attempt == 1:
            assert not (props.headers or {}).get("x-death")
        else:
            x_death = {(e["queue"], e["reason"]): e for e in props.headers["x-death"]}
            assert x_death[(work, "rejected")]["count"] == 1
            assert x_death[(retry, "expired")]["count"] == 1
            # The most recent death is first.
            assert props.headers["x-death"][0]["queue"] == retry
        ch.basic_reject(method.delivery_tag, requeue=False)

    # After the second reject the message is in retry again; the work entry counts 2.
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while True:
        method, props, body = ch.basic_get(work, auto_ack=True)
        if method is not None:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    x_death = {(e["queue"], e["reason"]): e for e in props.headers["x-death"]}
    assert x_death[(work, "rejected")]["count"] == 2
    assert x_death[(retry, "expired")]["count"] == 2


def test_max_length_drop_head_dead_letters(ch, names):
    dlx, dlq, src = declare_dlx(ch, names, **{"x-max-length": 2})
    for i in range(4):
        ch.basic_publish("", src, str(i).encode())
    dead = wait_for_dead(ch, dlq, 2)
    assert [b for _, _, b in dead] == [b"0", b"1"]
    assert dead[0][1].headers["x-death"][0]["reason"] == "maxlen"
    assert bodies(ch, src) == [b"2", b"3"]
