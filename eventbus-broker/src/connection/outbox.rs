//! The outgoing side of a connection: methods and contents are encoded into one buffer that the
//! connection task flushes after each batch of work.

use amq_protocol::protocol::AMQPClass;

use crate::model::Message;
use crate::protocol::frame;

/// Buffered outgoing frames.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Encoded frames waiting to be written.
    pub buf: Vec<u8>,
    /// Negotiated frame-max (bodies are split accordingly).
    pub frame_max: u32,
}

impl Outbox {
    /// Queue a method frame.
    pub fn method(&mut self, channel: u16, m: AMQPClass) {
        frame::encode_method(&mut self.buf, channel, &m);
    }

    /// Queue a method followed by the message content.
    pub fn with_content(&mut self, channel: u16, m: AMQPClass, msg: &Message) {
        frame::encode_method(&mut self.buf, channel, &m);
        frame::encode_content(
            &mut self.buf,
            channel,
            &msg.raw_properties,
            &msg.body,
            self.frame_max,
        );
    }

    /// Queue a `basic.deliver` with content.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver(
        &mut self,
        channel: u16,
        consumer_tag: &str,
        delivery_tag: u64,
        redelivered: bool,
        msg: &Message,
    ) {
        frame::encode_deliver(
            &mut self.buf,
            channel,
            consumer_tag,
            delivery_tag,
            redelivered,
            &msg.exchange,
            &msg.routing_key,
        );
        frame::encode_content(
            &mut self.buf,
            channel,
            &msg.raw_properties,
            &msg.body,
            self.frame_max,
        );
    }

    /// Queue a heartbeat.
    pub fn heartbeat(&mut self) {
        frame::encode_heartbeat(&mut self.buf);
    }
}
