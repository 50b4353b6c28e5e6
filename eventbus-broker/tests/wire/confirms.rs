//! Replies that wait for the message store: publisher confirms and `tx.commit-ok` go out only
//! after their fsync, while the connection keeps reading and delivering. Checked on the wire,
//! where the exact frames (and their order) are visible.

use amq_protocol::protocol::{basic, channel, confirm, queue, tx, AMQPClass};
use amq_protocol::types::FieldTable;
use eventbus_broker::protocol::frame::{encode_content, encode_method, encode_properties, Frame};

use super::{broker, method, Raw};

fn declare(ch: u16, name: &str) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
}

/// `n` persistent publishes of a small body to `queue` via the default exchange.
fn publishes(ch: u16, queue: &str, n: usize) -> Vec<u8> {
    let props = encode_properties(
        &amq_protocol::protocol::BasicProperties::default().with_delivery_mode(2),
    );
    let mut out = Vec::new();
    for i in 0..n {
        encode_method(
            &mut out,
            ch,
            &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: queue.into(),
                mandatory: false,
                immediate: false,
            })),
        );
        encode_content(&mut out, ch, &props, format!("m{i}").as_bytes(), 4096);
    }
    out
}

/// The next method frame (skipping heartbeats), with its channel.
async fn next_method(r: &mut Raw) -> (u16, AMQPClass) {
    loop {
        match r.read().await {
            Some(Frame::Method(ch, m)) => return (ch, *m),
            Some(Frame::Heartbeat(_)) => {}
            Some(f) => panic!("unexpected frame {f:?}"),
            None => panic!("connection closed or timed out"),
        }
    }
}

async fn confirm_channel(r: &mut Raw, ch: u16, queue: &str) {
    r.open_channel(ch).await;
    r.send(&declare(ch, queue)).await;
    let (_, m) = next_method(r).await;
    assert!(
        matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
        "{m:?}"
    );
    r.send(&method(
        ch,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    ))
    .await;
    let (_, m) = next_method(r).await;
    assert!(
        matches!(m, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))),
        "{m:?}"
    );
}

/// Every tag is confirmed exactly once, in order, as acks (some `multiple`), and a batch that
/// arrived in one read is not confirmed frame by frame.
#[tokio::test]
async fn confirms_of_a_batch_are_cumulative_acks_in_tag_order() {
    const N: u64 = 200;
    let (b, _d) = broker().await;
    let mut r = Raw::open(b.amqp_addr(), 0).await;
    confirm_channel(&mut r, 1, "wire-confirms").await;
    r.send(&publishes(1, "wire-confirms", N as usize)).await;
    let mut confirmed = 0u64;
    let mut frames = 0;
    while confirmed < N {
        let (ch, m) = next_method(&mut r).await;
        assert_eq!(ch, 1);
        let AMQPClass::Basic(basic::AMQPMethod::Ack(a)) = m else {
            panic!("expected basic.ack, got {m:?}")
        };
        frames += 1;
        if a.multiple {
            assert!(a.delivery_tag > confirmed, "{a:?} after {confirmed}");
        } else {
            assert_eq!(a.delivery_tag, confirmed + 1, "single ack out of order");
        }
        confirmed = a.delivery_tag;
    }
    assert_eq!(confirmed, N);
    assert!(
        frames < N,
        "{frames} ack frames for {N} publishes sent in one write"
    );
}

/// A `tx.commit-ok` waits for its fsync, and nothing after it on the channel overtakes it.
#[tokio::test]
async fn tx_commit_ok_comes_before_later_replies() {
    let (b, _d) = broker().await;
    let mut r = Raw::open(b.amqp_addr(), 0).await;
    r.open_channel(1).await;
    r.send(&declare(1, "wire-tx")).await;
    next_method(&mut r).await;
    r.send(&method(
        1,
        AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
    ))
    .await;
    let (_, m) = next_method(&mut r).await;
    assert!(
        matches!(m, AMQPClass::Tx(tx::AMQPMethod::SelectOk(_))),
        "{m:?}"
    );
    let mut batch = publishes(1, "wire-tx", 20);
    batch.extend(method(
        1,
        AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
    ));
    batch.extend(declare(1, "wire-tx-after"));
    r.send(&batch).await;
    let (_, first) = next_method(&mut r).await;
    assert!(
        matches!(first, AMQPClass::Tx(tx::AMQPMethod::CommitOk(_))),
        "expected tx.commit-ok first, got {first:?}"
    );
    let (_, second) = next_method(&mut r).await;
    assert!(
        matches!(second, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
        "{second:?}"
    );
    // the committed messages are there
    r.send(&declare(1, "wire-tx")).await;
    let (_, m) = next_method(&mut r).await;
    let AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) = m else {
        panic!("{m:?}")
    };
    assert_eq!(ok.message_count, 20);
}

/// Confirms still waiting for a sync when their channel closes are dropped: a client never
/// sees a frame on a channel after its close-ok, not even once it reopens the channel.
#[tokio::test]
async fn no_confirms_on_a_channel_after_it_closed() {
    let (b, _d) = broker().await;
    let mut r = Raw::open(b.amqp_addr(), 0).await;
    confirm_channel(&mut r, 1, "wire-close").await;
    let mut batch = publishes(1, "wire-close", 100);
    batch.extend(method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    ));
    batch.extend(method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ));
    batch.extend(declare(1, "wire-close-after"));
    r.send(&batch).await;
    let mut acked = 0;
    loop {
        let (ch, m) = next_method(&mut r).await;
        assert_eq!(ch, 1);
        match m {
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => acked = a.delivery_tag,
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => break,
            m => panic!("unexpected {m:?}"),
        }
    }
    assert!(acked <= 100);
    let (_, m) = next_method(&mut r).await;
    assert!(
        matches!(m, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))),
        "{m:?}"
    );
    let (_, m) = next_method(&mut r).await;
    assert!(
        matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
        "{m:?}"
    );
    // the next frame on the reopened channel answers the next request: no stale confirm
    r.send(&declare(1, "wire-close-after")).await;
    let (_, m) = next_method(&mut r).await;
    assert!(
        matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
        "stale frame on reopened channel: {m:?}"
    );
}
