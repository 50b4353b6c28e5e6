//! The transport contract: how envelopes reach a broker and come back.
//!
//! A transport moves [`Envelope`]s between publishers and handler groups.
//! Its model is the one AMQP 0-9-1 and NATS JetStream share:
//!
//! - **Routing by event name.** [`Publisher::publish`] offers an envelope to
//!   every *group* subscribed to its [`Envelope::name`]. Each group owns one
//!   queue (AMQP queue / JetStream durable consumer); every group gets every
//!   event it subscribed to (fan-out across groups), and the consumers of
//!   one group *compete* for its messages (each message goes to one of them).
//! - **Confirmed publish.** `publish` returns `Ok` only once the transport has
//!   taken responsibility for the message (AMQP publisher confirm, JetStream
//!   `PubAck`). On `Err` the message may or may not have been stored: the
//!   caller retries, and the consumer side tolerates the duplicate.
//! - **At-least-once delivery.** A delivery stays owned by its consumer until
//!   it is acked. [`Acker::nack`] with `requeue` hands it back for
//!   redelivery, flagged [`Delivery::redelivered`]; a consumer that goes away
//!   (dropped [`Subscription`], lost connection) releases its unacked
//!   deliveries the same way. Duplicates are therefore possible; losses are not.
//! - **Dead letters.** [`Acker::dead_letter`] moves a message to the group's
//!   dead-letter destination (with the failure in its headers) and removes it
//!   from the queue, as one step from the caller's point of view.
//! - **Order.** Within one group, messages are delivered in the order they
//!   were published (per publisher), except that redelivered messages may
//!   come later. Per-key order across a group is the workers' job.
//! - **Flow control.** [`SubscriptionSpec::prefetch`] bounds the unacked
//!   deliveries per subscription (AMQP `basic.qos`, JetStream `max_ack_pending`).

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod memory;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use async_trait::async_trait;
use futures_util::Stream;

use crate::{BoxError, Envelope};

/// A transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The broker is unreachable or the connection broke; retrying may help.
    #[error("transport unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The broker refused the message (negative confirm, limit reached).
    #[error("publish rejected: {0}")]
    Rejected(String),
    /// The delivery was already settled or its consumer is gone.
    #[error("delivery already settled or its consumer is gone")]
    Settled,
    /// The transport has been closed.
    #[error("transport closed")]
    Closed,
    /// Any other failure.
    #[error(transparent)]
    Other(BoxError),
}

/// What a group subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The handler group (queue name on brokers).
    pub group: String,
    /// Event names to receive.
    pub events: Vec<String>,
    /// Maximum unacked deliveries handed to this subscription.
    pub prefetch: u16,
}

impl SubscriptionSpec {
    /// A subscription of `group` to `events` with prefetch 256.
    pub fn new<I, S>(group: impl Into<String>, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            group: group.into(),
            events: events.into_iter().map(Into::into).collect(),
            prefetch: 256,
        }
    }
    /// Sets the prefetch.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }
}

/// Publishes envelopes, confirmed.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes one envelope; returns after the transport confirmed it.
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError>;

    /// Publishes a shared envelope. Transports that keep messages in memory
    /// override this to avoid copying it; the default calls `publish`.
    async fn publish_shared(&self, envelope: Arc<Envelope>) -> Result<(), TransportError> {
        self.publish(&envelope).await
    }

    /// Publishes several envelopes in order; returns after all are confirmed.
    /// Transports override this to pipeline confirms.
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        for e in envelopes {
            self.publish(e).await?;
        }
        Ok(())
    }
}

/// Opens subscriptions for handler groups.
#[async_trait]
pub trait Subscriber: Send + Sync + 'static {
    /// Declares the group's queue (idempotent), binds it to `spec.events`
    /// and starts consuming from it.
    async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, TransportError>;

    /// Consumes the group's dead-letter destination (for inspection and replay).
    async fn subscribe_dead_letters(
        &self,
        group: &str,
        prefetch: u16,
    ) -> Result<Subscription, TransportError>;
}

/// A publisher and subscriber in one: what the bus runs on.
pub trait Transport: Publisher + Subscriber {}
impl<T: Publisher + Subscriber> Transport for T {}

/// Settles one delivery. Exactly one of its methods is called, once.
#[async_trait]
pub trait Acker: Send + Sync + 'static {
    /// Done: remove the message from the queue.
    async fn ack(self: Box<Self>) -> Result<(), TransportError>;
    /// Failed: redeliver later (`requeue`) or drop it (`!requeue`, which on
    /// brokers with a dead-letter exchange configured dead-letters it).
    async fn nack(self: Box<Self>, requeue: bool) -> Result<(), TransportError>;
    /// Gave up: put `envelope` (the original plus failure headers) on the
    /// group's dead-letter destination, then remove the original.
    async fn dead_letter(self: Box<Self>, envelope: Envelope) -> Result<(), TransportError>;
}

/// One message handed to a consumer, to be settled with its [`Acker`].
pub struct Delivery {
    /// The message (shared: transports and the pipeline pass it on without copying).
    pub envelope: Arc<Envelope>,
    /// The transport delivered it before (the handler may have seen it).
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("envelope", &self.envelope)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A delivery settled through `acker`.
    pub fn new(envelope: Arc<Envelope>, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Self {
            envelope,
            redelivered,
            acker,
        }
    }
    /// Splits into message and acker.
    pub fn into_parts(self) -> (Arc<Envelope>, bool, Box<dyn Acker>) {
        (self.envelope, self.redelivered, self.acker)
    }
    /// Acks it.
    pub async fn ack(self) -> Result<(), TransportError> {
        self.acker.ack().await
    }
    /// Nacks it.
    pub async fn nack(self, requeue: bool) -> Result<(), TransportError> {
        self.acker.nack(requeue).await
    }
    /// Dead-letters it with the given envelope.
    pub async fn dead_letter(self, envelope: Envelope) -> Result<(), TransportError> {
        self.acker.dead_letter(envelope).await
    }
}

/// A stream of deliveries for one group. Dropping it releases unacked
/// deliveries back to the queue (at-least-once).
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<Delivery, TransportError>> + Send>>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// Wraps a stream of deliveries.
    pub fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Delivery, TransportError>> + Send + 'static,
    {
        Self {
            inner: Box::pin(stream),
        }
    }
    /// The next delivery; `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        futures_util::StreamExt::next(self).await
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery, TransportError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The dead-letter destination name of `group` (queue or subject suffix).
pub fn dead_letter_name(group: &str) -> String {
    format!("{group}.dead-letter")
}
