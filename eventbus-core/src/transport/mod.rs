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
//!   deliveries per subscription (AMQP `basic.qos`, JetStream `max_ack_pending`);
//!   for a partitioned group, per owned partition.
//! - **Dead-letter destinations exist with the group.** [`Subscriber::subscribe`]
//!   and [`Subscriber::declare`] create the group's dead-letter destination
//!   too, so a dead letter is kept whether or not anything consumes dead
//!   letters yet; a dead letter the transport cannot store fails
//!   [`Acker::dead_letter`] and the original stays in the queue.
//! - **Unrouted events are kept.** An event no group is bound to is not
//!   dropped: it goes to a bounded `unrouted` destination (oldest dropped
//!   first when full), for inspection. A group that subscribes later does not
//!   receive it.
//! - **Partitioned groups.** A group subscribed with
//!   [`SubscriptionSpec::partitions`] `P > 1` is split into `P` partition
//!   queues by a stable hash of the event key (the message id for unkeyed
//!   events). The group's subscriptions (instances) share the partitions:
//!   each partition is consumed by exactly one live subscription at a time,
//!   the partitions are rebalanced as subscriptions come and go, and a
//!   partition changes hands only once its previous owner's deliveries are
//!   settled (or released, when that owner went away: then they are
//!   redelivered first, in order). One key's events are therefore handled in
//!   order across instances.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod memory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
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
    /// Maximum unacked deliveries handed to this subscription (per owned
    /// partition for a partitioned group).
    pub prefetch: u16,
    /// Partitions of the group (0 or 1: not partitioned; at most
    /// [`MAX_PARTITIONS`]). See the [module docs](self).
    pub partitions: u16,
}

/// Most partitions of one group.
pub const MAX_PARTITIONS: u16 = 1024;

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
            partitions: 0,
        }
    }
    /// Splits the group into `partitions` partitions (0 or 1: not partitioned).
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions;
        self
    }
    /// Whether the group is split into partitions (`partitions > 1`).
    pub fn is_partitioned(&self) -> bool {
        self.partitions > 1
    }
    /// Checks the settings a transport relies on.
    pub fn validate(&self) -> Result<(), TransportError> {
        if self.group.is_empty() {
            return Err(TransportError::Rejected("empty group name".to_owned()));
        }
        if self.partitions > MAX_PARTITIONS {
            return Err(TransportError::Rejected(format!(
                "group {}: {} partitions, at most {MAX_PARTITIONS}",
                self.group, self.partitions
            )));
        }
        Ok(())
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

    /// Publishes a shared envelope (what [`EventPublisher`](crate::EventPublisher)
    /// calls for every event). The default calls `publish`.
    ///
    /// Not an `async fn`: a transport that can confirm at once (an in-process
    /// queue with room) answers [`TransportFuture::ready`] and keeps the
    /// envelope without copying it; publishing then costs no allocation
    /// beyond the envelope's own.
    fn publish_shared(&self, envelope: Arc<Envelope>) -> TransportFuture<'_> {
        TransportFuture::new(async move { self.publish(&envelope).await })
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
    /// Declares the group's queue(s) and dead-letter destination
    /// (idempotent), binds them to `spec.events`, without consuming: a
    /// service provisions its topology this way before anything publishes,
    /// so that no event published in between goes unrouted.
    ///
    /// The default does nothing: for transports without topology of their
    /// own (a queue that is not routed by event name). The memory and AMQP
    /// transports declare.
    async fn declare(&self, spec: &SubscriptionSpec) -> Result<(), TransportError> {
        let _ = spec;
        Ok(())
    }

    /// Declares the group as [`Subscriber::declare`] does and starts
    /// consuming from it.
    async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, TransportError>;

    /// Consumes the group's dead-letter destination (for inspection and replay).
    async fn subscribe_dead_letters(
        &self,
        group: &str,
        prefetch: u16,
    ) -> Result<Subscription, TransportError>;

    /// Messages of `group` not settled yet (waiting, or delivered and not
    /// acked), if this transport can tell; `None` if it cannot. What
    /// [`RunningBus::wait_idle`](crate::RunningBus::wait_idle) polls.
    async fn pending(&self, group: &str) -> Result<Option<u64>, TransportError> {
        let _ = group;
        Ok(None)
    }

    /// Waits until nothing of `groups` is [pending](Subscriber::pending),
    /// woken by this transport's own publishes and settlements, and
    /// returns `true`; returns `false` at once if the transport cannot
    /// wake anyone (the default: callers poll `pending`, as for AMQP,
    /// whose counts live at the broker).
    async fn wait_settled(&self, groups: &[String]) -> Result<bool, TransportError> {
        let _ = groups;
        Ok(false)
    }
}

/// A publisher and subscriber in one: what the bus runs on.
pub trait Transport: Publisher + Subscriber {}
impl<T: Publisher + Subscriber> Transport for T {}

/// Settles one delivery. Exactly one of its methods is called, once.
///
/// The methods return a [`TransportFuture`] rather than being `async fn`s:
/// a transport that settles in memory answers [`TransportFuture::ready`]
/// (no allocation, no waiting); one that talks to a broker wraps its async
/// work in [`TransportFuture::new`].
pub trait Acker: Send + Sync + 'static {
    /// Done: remove the message from the queue.
    fn ack(self: Box<Self>) -> TransportFuture<'static>;
    /// Failed: redeliver later (`requeue`) or drop it (`!requeue`, which on
    /// brokers with a dead-letter exchange configured dead-letters it).
    fn nack(self: Box<Self>, requeue: bool) -> TransportFuture<'static>;
    /// Gave up: put `envelope` (the original plus failure headers) on the
    /// group's dead-letter destination, then remove the original.
    fn dead_letter(self: Box<Self>, envelope: Envelope) -> TransportFuture<'static>;
}

/// The outcome of a transport operation: known at once, or still on its way.
///
/// What [`Acker`]'s methods and [`Publisher::publish_shared`] return. An
/// in-process transport completes them synchronously
/// ([`TransportFuture::ready`]: no boxed future per message); a broker
/// transport returns its async work boxed ([`TransportFuture::new`]).
/// Either way the caller just `.await`s it.
#[must_use = "futures do nothing unless awaited"]
pub struct TransportFuture<'a>(FutureKind<'a>);

enum FutureKind<'a> {
    Ready(Option<Result<(), TransportError>>),
    Pending(BoxFuture<'a, Result<(), TransportError>>),
}

impl<'a> TransportFuture<'a> {
    /// An operation that already completed with `result`.
    pub fn ready(result: Result<(), TransportError>) -> Self {
        Self(FutureKind::Ready(Some(result)))
    }

    /// An operation that completes when `future` does.
    pub fn new<F>(future: F) -> Self
    where
        F: Future<Output = Result<(), TransportError>> + Send + 'a,
    {
        Self(FutureKind::Pending(Box::pin(future)))
    }

    /// Whether the result is already known (awaiting it will not wait).
    pub fn is_ready(&self) -> bool {
        matches!(self.0, FutureKind::Ready(_))
    }
}

impl fmt::Debug for TransportFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            FutureKind::Ready(r) => f.debug_tuple("TransportFuture::Ready").field(r).finish(),
            FutureKind::Pending(_) => f.write_str("TransportFuture::Pending"),
        }
    }
}

impl Future for TransportFuture<'_> {
    type Output = Result<(), TransportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            FutureKind::Ready(r) => {
                Poll::Ready(r.take().expect("TransportFuture polled after completion"))
            }
            FutureKind::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

/// Settles one [`Delivery`]: the transport's [`Acker`].
///
/// The in-memory transport's acker travels inline (no allocation per
/// delivery); other transports' are boxed.
pub struct DeliveryAcker(AckerKind);

enum AckerKind {
    Boxed(Box<dyn Acker>),
    Memory(memory::MemoryAcker),
}

impl fmt::Debug for DeliveryAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryAcker").finish_non_exhaustive()
    }
}

impl DeliveryAcker {
    /// Done: remove the message from the queue ([`Acker::ack`]).
    pub fn ack(self) -> TransportFuture<'static> {
        match self.0 {
            AckerKind::Boxed(a) => a.ack(),
            AckerKind::Memory(a) => TransportFuture::ready(a.ack()),
        }
    }
    /// Acks, or — for a memory delivery — adds the ack to `batch` to be
    /// settled with others (see [`memory::AckBatch`]).
    pub(crate) fn ack_in(self, batch: &mut memory::AckBatch) -> Option<TransportFuture<'static>> {
        match self.0 {
            AckerKind::Boxed(a) => Some(a.ack()),
            AckerKind::Memory(a) => {
                batch.push(a);
                None
            }
        }
    }
    /// Failed: redeliver later or drop it ([`Acker::nack`]).
    pub fn nack(self, requeue: bool) -> TransportFuture<'static> {
        match self.0 {
            AckerKind::Boxed(a) => a.nack(requeue),
            AckerKind::Memory(a) => TransportFuture::ready(a.nack(requeue)),
        }
    }
    /// Gave up: dead-letter `envelope` ([`Acker::dead_letter`]).
    pub fn dead_letter(self, envelope: Envelope) -> TransportFuture<'static> {
        match self.0 {
            AckerKind::Boxed(a) => a.dead_letter(envelope),
            AckerKind::Memory(a) => TransportFuture::ready(a.dead_letter(envelope)),
        }
    }
}

/// One message handed to a consumer, to be settled with its [`Acker`].
pub struct Delivery {
    /// The message (shared: transports and the pipeline pass it on without copying).
    pub envelope: Arc<Envelope>,
    /// The transport delivered it before (the handler may have seen it).
    pub redelivered: bool,
    acker: DeliveryAcker,
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
            acker: DeliveryAcker(AckerKind::Boxed(acker)),
        }
    }
    /// A delivery of the memory transport (its acker inline).
    fn memory(envelope: Arc<Envelope>, redelivered: bool, acker: memory::MemoryAcker) -> Self {
        Self {
            envelope,
            redelivered,
            acker: DeliveryAcker(AckerKind::Memory(acker)),
        }
    }
    /// Splits into message and acker.
    pub fn into_parts(self) -> (Arc<Envelope>, bool, DeliveryAcker) {
        (self.envelope, self.redelivered, self.acker)
    }
    /// Acks it.
    pub fn ack(self) -> TransportFuture<'static> {
        self.acker.ack()
    }
    /// Nacks it.
    pub fn nack(self, requeue: bool) -> TransportFuture<'static> {
        self.acker.nack(requeue)
    }
    /// Dead-letters it with the given envelope.
    pub fn dead_letter(self, envelope: Envelope) -> TransportFuture<'static> {
        self.acker.dead_letter(envelope)
    }
}

/// A stream of deliveries for one group. Dropping it releases unacked
/// deliveries back to the queue (at-least-once).
pub struct Subscription {
    inner: SubscriptionKind,
    /// For a subscription of a partitioned group: the partitions it owns.
    partitions: Option<tokio::sync::watch::Receiver<Vec<u16>>>,
}

enum SubscriptionKind {
    /// The memory transport's stream, kept unboxed so that the receiver can
    /// take a batch of deliveries under one lock.
    Memory(memory::MemoryStream),
    Stream(Pin<Box<dyn Stream<Item = Result<Delivery, TransportError>> + Send>>),
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// What [`Subscription::take_ready`] ran into besides deliveries.
#[derive(Debug)]
pub(crate) enum TakeReady {
    /// Nothing more is ready now; the subscription goes on.
    Pending,
    /// The subscription reported an error (it goes on).
    Error(TransportError),
    /// The subscription ended.
    Ended,
}

impl Subscription {
    /// Wraps a stream of deliveries.
    pub fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Delivery, TransportError>> + Send + 'static,
    {
        Self {
            inner: SubscriptionKind::Stream(Box::pin(stream)),
            partitions: None,
        }
    }

    fn memory(stream: memory::MemoryStream) -> Self {
        Self {
            inner: SubscriptionKind::Memory(stream),
            partitions: None,
        }
    }

    /// Marks this as a subscription of a partitioned group whose owned
    /// partitions (sorted) the transport publishes through `owned`.
    pub fn with_partitions(mut self, owned: tokio::sync::watch::Receiver<Vec<u16>>) -> Self {
        self.partitions = Some(owned);
        self
    }

    /// The partitions this subscription owns now (sorted); `None` if its
    /// group is not partitioned.
    pub fn owned_partitions(&self) -> Option<Vec<u16>> {
        self.partitions.as_ref().map(|w| w.borrow().clone())
    }

    /// A watch on [`Subscription::owned_partitions`], to wait for a
    /// rebalance; `None` if the group is not partitioned.
    pub fn partition_watch(&self) -> Option<tokio::sync::watch::Receiver<Vec<u16>>> {
        self.partitions.clone()
    }

    /// The next delivery; `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        futures_util::StreamExt::next(self).await
    }

    /// Moves up to `max` deliveries that are ready now into `out`, without
    /// waiting; stops early at an error or the end of the subscription.
    pub(crate) fn take_ready(&mut self, max: usize, out: &mut Vec<Delivery>) -> TakeReady {
        match &mut self.inner {
            SubscriptionKind::Memory(s) => match s.take(max, out) {
                memory::Taken::Pending => TakeReady::Pending,
                memory::Taken::Ended => TakeReady::Ended,
            },
            SubscriptionKind::Stream(s) => {
                for _ in 0..max {
                    match futures_util::FutureExt::now_or_never(futures_util::StreamExt::next(s)) {
                        None => return TakeReady::Pending,
                        Some(Some(Ok(d))) => out.push(d),
                        Some(Some(Err(e))) => return TakeReady::Error(e),
                        Some(None) => return TakeReady::Ended,
                    }
                }
                TakeReady::Pending
            }
        }
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery, TransportError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.inner {
            SubscriptionKind::Memory(s) => Pin::new(s).poll_next(cx),
            SubscriptionKind::Stream(s) => s.as_mut().poll_next(cx),
        }
    }
}

/// The dead-letter destination name of `group` (queue or subject suffix).
pub fn dead_letter_name(group: &str) -> String {
    format!("{group}.dead-letter")
}

/// The queue name of partition `index` of `group`: `<group>.p<index>`.
pub fn partition_name(group: &str, index: u16) -> String {
    format!("{group}.p{index}")
}

/// The string a partitioned group hashes to choose an envelope's partition:
/// its key, or for an unkeyed envelope its id (unkeyed events have no
/// order to keep, so they are spread evenly).
pub fn partition_key(envelope: &Envelope) -> std::borrow::Cow<'_, str> {
    match &envelope.key {
        Some(k) => std::borrow::Cow::Borrowed(k),
        None => std::borrow::Cow::Owned(envelope.id.to_string()),
    }
}

/// Default bound of the `unrouted` destination (oldest dropped first).
pub const DEFAULT_MAX_UNROUTED: usize = 10_000;
