//! Error texts built from client strings (queue names, argument values, the SASL mechanism)
//! are cut to a short-string on a character boundary: the client gets a proper close with the
//! right code and valid UTF-8, and the broker stays up.

use super::*;

/// The reply text of the next close (connection or channel), with its code.
async fn close_text(r: &mut Raw) -> Option<(u16, String)> {
    for _ in 0..50 {
        if let Frame::Method(_, m) = r.read().await? {
            match *m {
                AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                    return Some((c.reply_code, c.reply_text.to_string()))
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                    return Some((c.reply_code, c.reply_text.to_string()))
                }
                _ => {}
            }
        }
    }
    None
}

/// 127 two-byte characters: 254 bytes, a valid queue name; in "NOT_FOUND - no queue '…"
/// (22 bytes of prefix) byte 255 falls inside a character.
fn wide_name() -> String {
    "é".repeat(127)
}

fn declare(name: &str, passive: bool, arguments: FieldTable) -> Vec<u8> {
    method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments,
        })),
    )
}

/// Cut to a short-string, on a character boundary (at most 3 bytes short of 255).
fn check_text(prefix: &str, text: &str) {
    assert!(text.len() <= 255, "{}", text.len());
    assert!(text.len() >= 252, "cut too short: {}", text.len());
    assert!(text.starts_with(prefix), "{text}");
}

#[tokio::test]
async fn multibyte_queue_name_in_404_text_is_a_channel_close() {
    let (b, _d) = broker().await;
    let addr = b.amqp_addr();
    let mut other = Raw::open(addr, 0).await;
    other.open_channel(1).await;
    let mut r = Raw::open(addr, 0).await;
    r.open_channel(1).await;
    let name = wide_name();
    r.send(&declare(&name, true, FieldTable::default())).await;
    let (code, text) = close_text(&mut r).await.expect("channel.close");
    assert_eq!(code, 404);
    check_text("NOT_FOUND - no queue 'éé", &text);
    // the connection itself survives a channel error
    r.open_channel(2).await;
    assert_healthy(addr, &mut other).await;
}

#[tokio::test]
async fn multibyte_argument_value_in_406_text_is_a_channel_close() {
    let (b, _d) = broker().await;
    let addr = b.amqp_addr();
    let mut other = Raw::open(addr, 0).await;
    other.open_channel(1).await;
    let mut r = Raw::open(addr, 0).await;
    r.open_channel(1).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("€".repeat(200))),
    );
    r.send(&declare("q", false, args)).await;
    let (code, text) = close_text(&mut r).await.expect("channel.close");
    assert_eq!(code, 406);
    check_text("PRECONDITION_FAILED - invalid arg 'x-queue-type'", &text);
    assert_healthy(addr, &mut other).await;
}

#[tokio::test]
async fn multibyte_sasl_mechanism_is_a_connection_close() {
    let (b, _d) = broker().await;
    let addr = b.amqp_addr();
    let mut other = Raw::open(addr, 0).await;
    other.open_channel(1).await;
    for pad in 0..4 {
        let mut r = Raw::connect(addr).await;
        r.send(b"AMQP\x00\x00\x09\x01").await;
        r.read().await.expect("connection.start");
        // "COMMAND_INVALID - unknown authentication mechanism '" is 52 bytes; the padding moves
        // byte 255 through every position of a 4-byte character
        let mech = format!("{}{}", "m".repeat(pad), "😀".repeat(60));
        r.send(&method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: mech.as_str().into(),
                response: LongString::from(b"\0guest\0guest".to_vec()),
                locale: "en_US".into(),
            })),
        ))
        .await;
        let (code, text) = close_text(&mut r).await.expect("connection.close");
        assert_eq!(code, 503);
        check_text("COMMAND_INVALID - unknown authentication mechanism", &text);
    }
    assert_healthy(addr, &mut other).await;
}
