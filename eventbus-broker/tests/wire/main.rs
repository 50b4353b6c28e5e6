//! Raw-bytes protocol tests: no client library, just frames on a socket. Each malformed input
//! must produce the right close code while the broker (and other connections) stay up.

use std::time::Duration;

use amq_protocol::protocol::{channel, connection, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;
use eventbus_broker::protocol::frame::{decode, encode_method, Frame};
use eventbus_broker::{Broker, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod close_ids;
mod confirms;
mod fuzzish;
mod oracle;
mod utf8;

#[derive(Debug)]
pub struct Raw {
    s: TcpStream,
    buf: BytesMut,
    pub frame_max: u32,
    pub start: Option<AMQPClass>,
}

pub fn method(ch: u16, m: AMQPClass) -> Vec<u8> {
    let mut v = Vec::new();
    encode_method(&mut v, ch, &m);
    v
}

pub fn raw_frame(t: u8, ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&ch.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(0xCE);
    v
}

fn sstr(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

#[derive(Debug, PartialEq)]
pub enum Closed {
    Connection(u16),
    Channel(u16, u16),
    Eof,
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        Raw {
            s,
            buf: BytesMut::new(),
            frame_max: 0,
            start: None,
        }
    }

    pub async fn send(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b).await;
    }

    pub async fn read(&mut self) -> Option<Frame> {
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

    /// Handshake as guest with the given heartbeat.
    pub async fn open(addr: std::net::SocketAddr, heartbeat: u16) -> Raw {
        let mut r = Raw::connect(addr).await;
        r.send(b"AMQP\x00\x00\x09\x01").await;
        let start = r.read().await.expect("start");
        if let Frame::Method(_, m) = start {
            r.start = Some(*m);
        }
        r.send(&method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from(b"\0guest\0guest".to_vec()),
                locale: "en_US".into(),
            })),
        ))
        .await;
        let Some(Frame::Method(_, m)) = r.read().await else {
            panic!("tune")
        };
        let AMQPClass::Connection(connection::AMQPMethod::Tune(t)) = *m else {
            panic!("tune")
        };
        r.frame_max = t.frame_max;
        r.send(&method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: t.channel_max,
                frame_max: t.frame_max,
                heartbeat,
            })),
        ))
        .await;
        r.send(&method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        ))
        .await;
        let Some(Frame::Method(_, m)) = r.read().await else {
            panic!("open-ok")
        };
        assert!(matches!(
            *m,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
        ));
        r
    }

    pub async fn open_channel(&mut self, ch: u16) {
        self.send(&method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ))
        .await;
        let Some(Frame::Method(_, m)) = self.read().await else {
            panic!("channel.open-ok")
        };
        assert!(
            matches!(*m, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))),
            "{m:?}"
        );
    }

    /// Read until a close arrives and return it whole: `(channel, reply
    /// code, class id, method id)` (`None` at EOF). A connection.close is
    /// answered with close-ok.
    pub async fn close_frame(&mut self) -> Option<(u16, u16, u16, u16)> {
        for _ in 0..50 {
            let Frame::Method(ch, m) = self.read().await? else {
                continue;
            };
            match *m {
                AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                    self.send(&method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    ))
                    .await;
                    return Some((0, c.reply_code, c.class_id, c.method_id));
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                    return Some((ch, c.reply_code, c.class_id, c.method_id))
                }
                _ => {}
            }
        }
        None
    }

    /// Read until a close arrives (skipping heartbeats and other frames).
    pub async fn closed(&mut self) -> Closed {
        for _ in 0..50 {
            match self.read().await {
                None => return Closed::Eof,
                Some(Frame::Method(ch, m)) => match *m {
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                        self.send(&method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        ))
                        .await;
                        return Closed::Connection(c.reply_code);
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                        return Closed::Channel(ch, c.reply_code)
                    }
                    _ => {}
                },
                Some(_) => {}
            }
        }
        Closed::Eof
    }
}

pub async fn broker() -> (Broker, tempfile::TempDir) {
    broker_with(|_| {}).await
}

pub async fn broker_with(f: impl FnOnce(&mut Config)) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        amqp_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    f(&mut config);
    (Broker::start(config).await.unwrap(), dir)
}

/// After an error on one connection, a second, already open connection still works and new
/// connections are accepted.
async fn assert_healthy(addr: std::net::SocketAddr, other: &mut Raw) {
    other
        .send(&method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "health".into(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ))
        .await;
    let Some(Frame::Method(_, m)) = other.read().await else {
        panic!("declare-ok")
    };
    assert!(
        matches!(*m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
        "{m:?}"
    );
    let mut fresh = Raw::open(addr, 0).await;
    fresh.open_channel(1).await;
}

async fn case(bytes: Vec<u8>, open_channel: bool, expect: Closed) {
    let (b, _d) = broker().await;
    let addr = b.amqp_addr();
    let mut other = Raw::open(addr, 0).await;
    other.open_channel(1).await;
    let mut r = Raw::open(addr, 0).await;
    if open_channel {
        r.open_channel(1).await;
    }
    r.send(&bytes).await;
    assert_eq!(r.closed().await, expect);
    assert_healthy(addr, &mut other).await;
}

#[tokio::test]
async fn bad_frame_end_is_501() {
    case(
        vec![8, 0, 0, 0, 0, 0, 0, 0xAB],
        true,
        Closed::Connection(501),
    )
    .await;
}

#[tokio::test]
async fn oversized_frame_is_501_before_payload() {
    // announce a huge frame but never send the payload: the check must not wait for it
    case(
        vec![1, 0, 1, 0x7F, 0xFF, 0xFF, 0xFF],
        true,
        Closed::Connection(501),
    )
    .await;
}

#[tokio::test]
async fn unknown_class_and_method_are_540() {
    case(
        raw_frame(1, 1, &[0, 99, 0, 1]),
        true,
        Closed::Connection(540),
    )
    .await;
    case(
        raw_frame(1, 1, &[0, 50, 0, 99]),
        true,
        Closed::Connection(540),
    )
    .await;
}

#[tokio::test]
async fn unknown_frame_type_is_501() {
    case(raw_frame(7, 1, &[1, 2, 3]), true, Closed::Connection(501)).await;
}

#[tokio::test]
async fn truncated_arguments_are_501() {
    case(
        raw_frame(1, 1, &[0, 50, 0, 10, 0]),
        true,
        Closed::Connection(501),
    )
    .await;
}

#[tokio::test]
async fn method_on_unopened_channel_is_504() {
    let mut p = vec![0, 50, 0, 10, 0, 0];
    p.extend(sstr("q"));
    p.push(0);
    p.extend([0, 0, 0, 0]);
    case(raw_frame(1, 5, &p), false, Closed::Connection(504)).await;
}

#[tokio::test]
async fn second_channel_open_is_504() {
    case(
        method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
        true,
        Closed::Connection(504),
    )
    .await;
}

#[tokio::test]
async fn content_without_method_is_505() {
    let mut hdr = vec![0, 60, 0, 0];
    hdr.extend(5u64.to_be_bytes());
    hdr.extend([0, 0]);
    case(raw_frame(2, 1, &hdr), true, Closed::Connection(505)).await;
    case(raw_frame(3, 1, b"hello"), true, Closed::Connection(505)).await;
}

#[tokio::test]
async fn method_instead_of_content_header_is_505() {
    let mut publish = vec![0, 60, 0, 40, 0, 0];
    publish.extend(sstr(""));
    publish.extend(sstr("q"));
    publish.push(0);
    let mut bytes = raw_frame(1, 1, &publish);
    bytes.extend(raw_frame(1, 1, &publish));
    case(bytes, true, Closed::Connection(505)).await;
}

#[tokio::test]
async fn heartbeat_on_nonzero_channel_is_501() {
    case(raw_frame(8, 1, &[]), true, Closed::Connection(501)).await;
}

/// Regression: ~1,500 nested tables in ~10 KB used to overflow the stack inside amq-protocol.
#[tokio::test]
async fn deeply_nested_tables_are_rejected_not_crashing() {
    let mut table: Vec<u8> = vec![0, 0, 0, 0];
    for _ in 0..1500 {
        let mut t = vec![1, b'k', b'F'];
        t.extend_from_slice(&table);
        let mut outer = (t.len() as u32).to_be_bytes().to_vec();
        outer.extend(t);
        table = outer;
    }
    let mut p = vec![0, 50, 0, 10, 0, 0];
    p.extend(sstr("deep"));
    p.push(0);
    p.extend(table);
    assert!(p.len() < 16_000);
    case(raw_frame(1, 1, &p), true, Closed::Connection(501)).await;
}

#[tokio::test]
async fn deeply_nested_headers_in_content_header_rejected() {
    let mut table: Vec<u8> = vec![0, 0, 0, 0];
    for _ in 0..1500 {
        let mut t = vec![1, b'k', b'F'];
        t.extend_from_slice(&table);
        let mut outer = (t.len() as u32).to_be_bytes().to_vec();
        outer.extend(t);
        table = outer;
    }
    let mut publish = vec![0, 60, 0, 40, 0, 0];
    publish.extend(sstr(""));
    publish.extend(sstr("q"));
    publish.push(0);
    let mut hdr = vec![0, 60, 0, 0];
    hdr.extend(0u64.to_be_bytes());
    hdr.extend(0x2000u16.to_be_bytes());
    hdr.extend(table);
    let mut bytes = raw_frame(1, 1, &publish);
    bytes.extend(raw_frame(2, 1, &hdr));
    case(bytes, true, Closed::Connection(501)).await;
}

#[tokio::test]
async fn bad_protocol_header_gets_ours_back() {
    let (b, _d) = broker().await;
    let mut r = Raw::connect(b.amqp_addr()).await;
    r.send(b"AMQP\x00\x00\x08\x00").await;
    let mut got = [0u8; 8];
    r.s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"AMQP\x00\x00\x09\x01");
}

/// Regression: pika refuses confirms unless connection.start advertises these capabilities.
#[tokio::test]
async fn connection_start_advertises_rabbitmq_capabilities() {
    let (b, _d) = broker().await;
    let r = Raw::open(b.amqp_addr(), 0).await;
    let Some(AMQPClass::Connection(connection::AMQPMethod::Start(s))) = r.start else {
        panic!("start")
    };
    let caps = s
        .server_properties
        .inner()
        .get("capabilities")
        .and_then(|c| c.as_field_table())
        .unwrap()
        .clone();
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
        "consumer_priorities",
    ] {
        assert_eq!(caps.inner().get(c), Some(&AMQPValue::Boolean(true)), "{c}");
    }
    let mechs = String::from_utf8_lossy(s.mechanisms.as_bytes()).into_owned();
    assert!(mechs.contains("PLAIN") && mechs.contains("AMQPLAIN"));
}

#[tokio::test]
async fn channel_max_enforced_by_server() {
    let (b, _d) = broker_with(|c| c.channel_max = 2).await;
    let mut r = Raw::open(b.amqp_addr(), 0).await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.send(&method(
        3,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ))
    .await;
    assert_eq!(r.closed().await, Closed::Connection(530));
}

#[tokio::test]
async fn missed_heartbeats_close_the_connection() {
    let (b, _d) = broker_with(|c| c.heartbeat = 1).await;
    let mut r = Raw::open(b.amqp_addr(), 1).await;
    // send nothing: after ~2 heartbeat intervals the server drops us
    let start = std::time::Instant::now();
    loop {
        match r.read().await {
            None => break,
            Some(Frame::Heartbeat(_)) => {}
            Some(f) => panic!("unexpected {f:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(8), "not closed");
    }
    assert!(start.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn wrong_password_closes_with_403() {
    let (b, _d) = broker().await;
    let mut r = Raw::connect(b.amqp_addr()).await;
    r.send(b"AMQP\x00\x00\x09\x01").await;
    r.read().await.unwrap();
    r.send(&method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(b"\0guest\0wrong".to_vec()),
            locale: "en_US".into(),
        })),
    ))
    .await;
    assert_eq!(r.closed().await, Closed::Connection(403));
}

#[tokio::test]
async fn channel_error_keeps_connection() {
    let (b, _d) = broker().await;
    let mut r = Raw::open(b.amqp_addr(), 0).await;
    r.open_channel(1).await;
    r.send(&method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "missing".into(),
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    ))
    .await;
    assert_eq!(r.closed().await, Closed::Channel(1, 404));
    // frames on a closing channel are ignored until close-ok
    r.send(&method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
    ))
    .await;
    r.open_channel(1).await;
}

#[tokio::test]
async fn prefetch_size_is_540() {
    // basic.qos prefetch-size=10 prefetch-count=0 global=0
    case(
        raw_frame(1, 1, &[0, 60, 0, 10, 0, 0, 0, 10, 0, 0, 0]),
        true,
        Closed::Connection(540),
    )
    .await;
}

#[tokio::test]
async fn recover_without_requeue_is_540() {
    case(
        raw_frame(1, 1, &[0, 60, 0, 110, 0]),
        true,
        Closed::Connection(540),
    )
    .await;
}

/// After replying close-ok the broker keeps reading until the client closes the socket, so
/// frames the client wrote after connection.close (amqplib does this with acks) do not reset
/// the connection.
#[tokio::test]
async fn frames_after_client_close_are_discarded_not_reset() {
    let (b, _d) = broker().await;
    let mut r = Raw::open(b.amqp_addr(), 0).await;
    r.open_channel(1).await;
    let mut bytes = method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    bytes.extend(raw_frame(1, 1, &[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1, 0]));
    r.send(&bytes).await;
    let Some(Frame::Method(0, m)) = r.read().await else {
        panic!("close-ok")
    };
    assert!(matches!(
        *m,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))
    ));
    // more late frames are still accepted by the socket
    r.send(&raw_frame(1, 1, &[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 2, 0]))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.s.write_all(&raw_frame(8, 0, &[]))
        .await
        .expect("socket must not be reset");
}
