//! A close caused by a method names that method: `connection.close` and
//! `channel.close` carry its class and method id (AMQP 0-9-1 §1.4.2.5;
//! clients print them, e.g. "caused by basic.publish").

use amq_protocol::protocol::{basic, channel, queue, AMQPClass};
use amq_protocol::types::FieldTable;

use super::{assert_healthy, broker, method, Raw};

#[tokio::test]
async fn hard_error_from_a_method_names_it_in_connection_close() {
    let (b, _dir) = broker().await;
    let mut other = Raw::open(b.amqp_addr(), 0).await;
    other.open_channel(1).await;
    let mut r = Raw::open(b.amqp_addr(), 0).await;
    r.open_channel(1).await;
    // immediate=true is not implemented (RabbitMQ: 540, a connection error).
    r.send(&method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: true,
        })),
    ))
    .await;
    assert_eq!(r.close_frame().await, Some((0, 540, 60, 40)));
    assert_healthy(b.amqp_addr(), &mut other).await;
}

#[tokio::test]
async fn second_channel_open_names_channel_open() {
    let (b, _dir) = broker().await;
    let mut r = Raw::open(b.amqp_addr(), 0).await;
    r.open_channel(1).await;
    r.send(&method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ))
    .await;
    assert_eq!(r.close_frame().await, Some((0, 504, 20, 10)));
}

#[tokio::test]
async fn soft_error_names_its_method_in_channel_close() {
    let (b, _dir) = broker().await;
    let mut r = Raw::open(b.amqp_addr(), 0).await;
    r.open_channel(3).await;
    r.send(&method(
        3,
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
    assert_eq!(r.close_frame().await, Some((3, 404, 50, 10)));
}
