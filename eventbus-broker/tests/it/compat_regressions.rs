//! Regressions found by the real-client suites in `compat/` (pika, amqplib): each case was
//! checked against RabbitMQ 3.10, which is the reference behaviour asserted here.

use std::net::SocketAddr;
use std::time::Duration;

use amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass};
use amq_protocol::types::{DecimalValue, LongString};
use bytes::BytesMut;
use eventbus_broker::protocol::frame::{decode, encode_method, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// A minimal raw client, for what lapin cannot send (prefetch-size) or hides (socket resets).

struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

fn method(ch: u16, m: AMQPClass) -> Vec<u8> {
    let mut v = Vec::new();
    encode_method(&mut v, ch, &m);
    v
}

fn raw_frame(t: u8, ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&ch.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(0xCE);
    v
}

/// `basic.ack` on `ch` (built by hand so no client state is involved).
fn ack(ch: u16, tag: u64) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 80];
    p.extend_from_slice(&tag.to_be_bytes());
    p.push(0);
    raw_frame(1, ch, &p)
}

fn conn_close() -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
}

impl Raw {
    async fn read(&mut self) -> Option<Frame> {
        loop {
            match decode(&mut self.buf, 0) {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => panic!("server sent garbage: {e}"),
            }
            match tokio::time::timeout(Duration::from_secs(5), self.s.read_buf(&mut self.buf)).await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    async fn read_method(&mut self) -> (u16, AMQPClass) {
        loop {
            match self.read().await {
                Some(Frame::Method(ch, m)) => return (ch, *m),
                Some(Frame::Heartbeat(_)) => {}
                other => panic!("expected a method frame, got {other:?}"),
            }
        }
    }

    /// Handshake as guest, then open channel 1.
    async fn open(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut r = Raw {
            s,
            buf: BytesMut::new(),
        };
        r.s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
        r.read_method().await; // start
        r.s.write_all(&method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from(b"\0guest\0guest".to_vec()),
                locale: "en_US".into(),
            })),
        ))
        .await
        .unwrap();
        let (_, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) = r.read_method().await
        else {
            panic!("expected connection.tune")
        };
        let mut b = method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: t.channel_max,
                frame_max: t.frame_max,
                heartbeat: 0,
            })),
        );
        b.extend(method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        ));
        b.extend(method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ));
        r.s.write_all(&b).await.unwrap();
        let (_, m) = r.read_method().await;
        assert!(
            matches!(m, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))),
            "{m:?}"
        );
        let (_, m) = r.read_method().await;
        assert!(
            matches!(m, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))),
            "{m:?}"
        );
        r
    }

    /// Expect connection.close with `code`, answer close-ok and expect the broker to end the
    /// connection cleanly.
    async fn expect_connection_close(&mut self, code: u16, text_prefix: &str) {
        let (ch, m) = self.read_method().await;
        let AMQPClass::Connection(connection::AMQPMethod::Close(c)) = m else {
            panic!("expected connection.close, got {m:?} on channel {ch}")
        };
        assert_eq!(ch, 0);
        assert_eq!(c.reply_code, code, "{}", c.reply_text);
        assert!(
            c.reply_text.as_str().starts_with(text_prefix),
            "{}",
            c.reply_text
        );
        self.s
            .write_all(&method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
            ))
            .await
            .unwrap();
        assert!(self.read().await.is_none(), "nothing may follow close-ok");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. topic routing: "" has zero words

#[tokio::test]
async fn topic_empty_routing_key_has_zero_words() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.exchange_declare(
        ss("t"),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let patterns = ["*", "*.#", "#", "", "#.*", "#.#"];
    for (i, p) in patterns.iter().enumerate() {
        let q = format!("q{i}");
        declare(&ch, &q).await;
        ch.queue_bind(
            ss(&q),
            ss("t"),
            ss(p),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    publish(&ch, "t", "", b"empty").await;
    publish(&ch, "t", "a", b"one").await;
    publish(&ch, "t", ".", b"two-empty-words").await;
    let mut got = Vec::new();
    for i in 0..patterns.len() {
        got.push(drain(&ch, &format!("q{i}")).await);
    }
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // RabbitMQ: only "#" (and the zero-word pattern "", and "#.#") match the empty key
    assert_eq!(got[0], v(&["one"]), "'*'");
    assert_eq!(got[1], v(&["one", "two-empty-words"]), "'*.#'");
    assert_eq!(got[2], v(&["empty", "one", "two-empty-words"]), "'#'");
    assert_eq!(got[3], v(&["empty"]), "''");
    assert_eq!(got[4], v(&["one", "two-empty-words"]), "'#.*'");
    assert_eq!(got[5], v(&["empty", "one", "two-empty-words"]), "'#.#'");
}

// ---------------------------------------------------------------------------------------------
// 2. connection close: frames written after connection.close must not hit a reset socket

#[tokio::test]
async fn frames_after_connection_close_do_not_reset_the_socket() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(b.broker.amqp_addr()).await;
    // amqplib writes connection.close ahead of acks it still had queued
    let mut bytes = conn_close();
    bytes.extend(ack(1, 1));
    bytes.extend(ack(1, 2));
    r.s.write_all(&bytes).await.unwrap();
    let (ch, m) = r.read_method().await;
    assert_eq!(ch, 0);
    assert!(
        matches!(m, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))),
        "{m:?}"
    );
    // the broker keeps reading and discarding: later writes succeed (a reset socket fails the
    // second write at the latest) and nothing but EOF comes back
    for tag in 3..6 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.s.write_all(&ack(1, tag))
            .await
            .expect("socket reset after close-ok");
    }
    r.s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), r.s.read_to_end(&mut rest))
        .await
        .expect("broker must close after the client does")
        .expect("connection reset instead of a clean close");
    assert_eq!(n, 0, "unexpected bytes after close-ok: {rest:?}");
}

/// Like RabbitMQ, an exclusive queue is gone once close-ok is sent, even if the client keeps its
/// socket open a little longer (the broker drains it meanwhile).
#[tokio::test]
async fn exclusive_queue_is_released_at_close_ok() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(b.broker.amqp_addr()).await;
    r.s.write_all(&method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "mine".into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    ))
    .await
    .unwrap();
    let (_, m) = r.read_method().await;
    assert!(
        matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
        "{m:?}"
    );
    r.s.write_all(&conn_close()).await.unwrap();
    let (_, m) = r.read_method().await;
    assert!(
        matches!(m, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))),
        "{m:?}"
    );
    // the raw socket stays open while another connection takes the name over
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("mine"),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("the closed connection's exclusive queue must be gone");
    drop(r);
}

#[tokio::test]
async fn server_close_waits_for_close_ok_discarding_other_frames() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(b.broker.amqp_addr()).await;
    // basic.recover requeue=false: connection exception 540
    let mut bytes = raw_frame(1, 1, &[0, 60, 0, 110, 0]);
    // frames the client sends before it sees connection.close are discarded
    bytes.extend(ack(1, 7));
    r.s.write_all(&bytes).await.unwrap();
    let (ch, m) = r.read_method().await;
    let AMQPClass::Connection(connection::AMQPMethod::Close(c)) = m else {
        panic!("expected connection.close, got {m:?} on {ch}")
    };
    assert_eq!(c.reply_code, 540);
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.s.write_all(&ack(1, 8))
        .await
        .expect("broker must wait for close-ok");
    r.s.write_all(&method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    ))
    .await
    .expect("broker must wait for close-ok");
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.s.write_all(&method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    ))
    .await
    .expect("broker must wait for close-ok");
    // no qos-ok or anything else: the connection just ends
    assert!(r.read().await.is_none());
}

/// After the broker sends connection.close it sends nothing else: a message routed to one of the
/// connection's consumers meanwhile stays in its queue instead of being delivered.
#[tokio::test]
async fn no_deliveries_after_server_connection_close() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "work").await;
    let mut r = Raw::open(b.broker.amqp_addr()).await;
    r.s.write_all(&method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "work".into(),
            consumer_tag: "c1".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    ))
    .await
    .unwrap();
    let (_, m) = r.read_method().await;
    assert!(
        matches!(m, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))),
        "{m:?}"
    );
    // basic.recover requeue=false: connection exception 540
    r.s.write_all(&raw_frame(1, 1, &[0, 60, 0, 110, 0]))
        .await
        .unwrap();
    let (_, m) = r.read_method().await;
    assert!(
        matches!(m, AMQPClass::Connection(connection::AMQPMethod::Close(_))),
        "{m:?}"
    );
    publish(&ch, "", "work", b"late").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.s.write_all(&method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    ))
    .await
    .unwrap();
    if let Some(f) = r.read().await {
        panic!("frame after connection.close: {f:?}");
    }
    assert_eq!(get_wait(&ch, "work").await.as_deref(), Some("late"));
}

// ---------------------------------------------------------------------------------------------
// 3. headers exchange: numbers compare by value across integer and float types

#[tokio::test]
async fn headers_numbers_match_across_integer_and_float_types() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.exchange_declare(
        ss("h"),
        ExchangeKind::Headers,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let bindings = [
        ("int", AMQPValue::LongInt(1)),
        ("double", AMQPValue::Double(1.0)),
        ("half", AMQPValue::Float(1.5)),
        ("str", lstr("1")),
    ];
    for (q, v) in &bindings {
        declare(&ch, q).await;
        ch.queue_bind(
            ss(q),
            ss("h"),
            ss(""),
            QueueBindOptions::default(),
            table(&[("x-match", lstr("all")), ("v", v.clone())]),
        )
        .await
        .unwrap();
    }
    let sends = [
        ("byte", AMQPValue::ShortShortInt(1)),
        ("ubyte", AMQPValue::ShortShortUInt(1)),
        ("short", AMQPValue::ShortInt(1)),
        ("long", AMQPValue::LongLongInt(1)),
        ("uint", AMQPValue::LongUInt(1)),
        ("float", AMQPValue::Float(1.0)),
        ("double", AMQPValue::Double(1.0)),
        ("timestamp", AMQPValue::Timestamp(1)),
        ("d1.5", AMQPValue::Double(1.5)),
        ("string", lstr("1")),
        ("bytes", AMQPValue::ByteArray(b"1".to_vec().into())),
        ("bool", AMQPValue::Boolean(true)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue { scale: 0, value: 1 }),
        ),
        ("two", AMQPValue::LongInt(2)),
    ];
    for (name, v) in &sends {
        publish_props(
            &ch,
            "h",
            "",
            name.as_bytes(),
            BasicProperties::default().with_headers(table(&[("v", v.clone())])),
        )
        .await;
    }
    let numeric_one = [
        "byte",
        "ubyte",
        "short",
        "long",
        "uint",
        "float",
        "double",
        "timestamp",
    ];
    // RabbitMQ 3.10: numbers (all integer widths, timestamp, float, double) compare with
    // Erlang's `==`; a string never equals a number, nor does a boolean or a decimal; byte
    // arrays and strings compare by their bytes
    assert_eq!(drain(&ch, "int").await, numeric_one);
    assert_eq!(drain(&ch, "double").await, numeric_one);
    assert_eq!(drain(&ch, "half").await, ["d1.5"]);
    assert_eq!(drain(&ch, "str").await, ["string", "bytes"]);
}

/// Queue-argument equivalence keeps RabbitMQ's type classes: 1000 and 1000.0 differ there.
#[tokio::test]
async fn float_argument_is_not_equivalent_to_integer_on_redeclare() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("ttl"),
        QueueDeclareOptions::default(),
        table(&[("x-message-ttl", AMQPValue::LongInt(1000))]),
    )
    .await
    .unwrap();
    let err = ch
        .queue_declare(
            ss("ttl"),
            QueueDeclareOptions::default(),
            table(&[("x-message-ttl", AMQPValue::Double(1000.0))]),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
}

// ---------------------------------------------------------------------------------------------
// 4. exclusive mismatch on redeclare: 405 RESOURCE_LOCKED, even on the owning connection

async fn redeclare_code(
    b: &TestBroker,
    first: QueueDeclareOptions,
    second: QueueDeclareOptions,
) -> Option<u16> {
    let conn = b.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let q = format!("ex-{}", fastrand_suffix());
    ch.queue_declare(ss(&q), first, FieldTable::default())
        .await
        .unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let r = ch2
        .queue_declare(ss(&q), second, FieldTable::default())
        .await;
    let _ = ch.queue_delete(ss(&q), QueueDeleteOptions::default()).await;
    r.err().map(|e| reply_code(&e).expect("protocol error"))
}

fn fastrand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

#[tokio::test]
async fn exclusive_mismatch_on_redeclare_is_405() {
    let b = TestBroker::start().await;
    let excl = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let plain = QueueDeclareOptions::default();
    assert_eq!(redeclare_code(&b, excl, plain).await, Some(405));
    assert_eq!(redeclare_code(&b, plain, excl).await, Some(405));
    assert_eq!(redeclare_code(&b, excl, excl).await, None);
    // the exclusive check comes before durable/auto-delete equivalence, as in RabbitMQ
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    assert_eq!(redeclare_code(&b, excl, durable).await, Some(405));
    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    assert_eq!(redeclare_code(&b, excl, auto_delete).await, Some(405));
}

// ---------------------------------------------------------------------------------------------
// 5. x-max-priority validation

#[tokio::test]
async fn x_max_priority_out_of_range_or_wrong_type_is_406() {
    let b = TestBroker::start().await;
    let conn = b.connect().await;
    let cases = [
        ("p255", AMQPValue::LongInt(255), None),
        ("p0", AMQPValue::ShortShortUInt(0), None),
        ("p256", AMQPValue::LongInt(256), Some(406)),
        ("p300", AMQPValue::LongLongInt(300), Some(406)),
        ("pbig", AMQPValue::LongLongInt(10_000_000_000), Some(406)),
        ("pneg", AMQPValue::ShortInt(-1), Some(406)),
        ("pstr", lstr("5"), Some(406)),
        ("pbool", AMQPValue::Boolean(true), Some(406)),
        (
            "pdec",
            AMQPValue::DecimalValue(DecimalValue { scale: 0, value: 5 }),
            Some(406),
        ),
    ];
    for (q, v, want) in cases {
        let ch = conn.create_channel().await.unwrap();
        let r = ch
            .queue_declare(
                ss(q),
                QueueDeclareOptions::default(),
                table(&[("x-max-priority", v)]),
            )
            .await;
        let err = r.err();
        assert_eq!(
            err.as_ref().map(|e| reply_code(e).expect("protocol error")),
            want,
            "{q}"
        );
        // RabbitMQ's wording of the range errors
        let detail = match q {
            "p256" => Some("{max_value_exceeded,256}"),
            "pneg" => Some("{value_negative,-1}"),
            _ => None,
        };
        if let (Some(e), Some(d)) = (err, detail) {
            let text = e.to_string();
            assert!(
                text.contains(&format!(
                    "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {d}"
                )),
                "{text}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. + 7. NOT_IMPLEMENTED features close the connection with 540

#[tokio::test]
async fn qos_prefetch_size_is_540_not_implemented() {
    let b = TestBroker::start().await;
    let mut r = Raw::open(b.broker.amqp_addr()).await;
    // basic.qos prefetch-size=10 prefetch-count=0 global=0
    r.s.write_all(&raw_frame(1, 1, &[0, 60, 0, 10, 0, 0, 0, 10, 0, 0, 0]))
        .await
        .unwrap();
    r.expect_connection_close(540, "NOT_IMPLEMENTED - prefetch_size!=0 (10)")
        .await;
    // prefetch-size 0 stays fine
    let mut r = Raw::open(b.broker.amqp_addr()).await;
    r.s.write_all(&raw_frame(1, 1, &[0, 60, 0, 10, 0, 0, 0, 0, 0, 5, 0]))
        .await
        .unwrap();
    let (_, m) = r.read_method().await;
    assert!(
        matches!(m, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))),
        "{m:?}"
    );
}

#[tokio::test]
async fn recover_without_requeue_is_540_not_implemented() {
    let b = TestBroker::start().await;
    for recover_async in [false, true] {
        let mut r = Raw::open(b.broker.amqp_addr()).await;
        let m = if recover_async {
            basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue: false })
        } else {
            basic::AMQPMethod::Recover(basic::Recover { requeue: false })
        };
        r.s.write_all(&method(1, AMQPClass::Basic(m)))
            .await
            .unwrap();
        r.expect_connection_close(540, "NOT_IMPLEMENTED - requeue=false")
            .await;
    }
    // requeue=true still works
    let (_c, ch) = b.channel().await;
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
}
