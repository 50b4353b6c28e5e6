//! The in-process transport: queues per group in shared memory.
//!
//! It follows the same contract as the broker transports (see the
//! [module docs](super)): one queue per group bound to event names,
//! competing consumers within a group, fan-out across groups, prefetch,
//! ack/nack/requeue with redelivery, dead-letter queues. Nothing survives the
//! process; use it for tests and single-process applications.
//!
//! Group queues are bounded: once a queue holds
//! [`MemoryTransport::with_max_queue_len`] ready messages (default
//! [`DEFAULT_MAX_QUEUE_LEN`]), publishers to it wait until its consumers
//! catch up — backpressure instead of unbounded memory. Requeued and
//! dead-lettered messages are never refused, so settling never waits.
//!
//! Each queue has its own lock; publishers, consumers and ackers of
//! different groups never contend. Consumers pull from their queue (no
//! per-consumer channel), so a busy consumer takes a message without any
//! wake-up, and an idle one is woken once.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context as TaskContext, Poll, Waker};

use async_trait::async_trait;
use futures_util::Stream;
use tokio::sync::Notify;

use super::{
    dead_letter_name, Acker, Delivery, Publisher, Subscriber, Subscription, SubscriptionSpec,
    TransportError,
};
use crate::Envelope;

/// Default maximum number of ready messages per group queue.
pub const DEFAULT_MAX_QUEUE_LEN: usize = 65_536;

/// In-memory transport. Cheap to clone; clones share the same queues.
#[derive(Clone)]
pub struct MemoryTransport {
    shared: Arc<Shared>,
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemoryTransport")
            .field("queues", &state.queues.keys().collect::<Vec<_>>())
            .field("max_queue_len", &self.shared.max_queue_len)
            .finish()
    }
}

/// Poisoning is ignored: a panic while holding a lock cannot leave the
/// queues half-updated in a way that loses messages.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Shared {
    state: Mutex<State>,
    max_queue_len: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Arc<QueueShared>>,
    /// event name → queues bound to it (shared with publishers without copying)
    routes: HashMap<String, Arc<[Arc<QueueShared>]>, BuildHasherDefault<FastHasher>>,
    next_consumer: u64,
    closed: bool,
}

impl State {
    /// The queue `name`, created empty if missing.
    fn queue(&mut self, shared: &Arc<Shared>, name: &str) -> Arc<QueueShared> {
        self.queues
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(QueueShared {
                    name: Arc::from(name),
                    transport: Arc::downgrade(shared),
                    max_len: shared.max_queue_len,
                    space: Notify::new(),
                    inner: Mutex::new(Queue::default()),
                })
            })
            .clone()
    }
}

/// One queue and what waits on it.
struct QueueShared {
    name: Arc<str>,
    /// For creating the dead-letter queue on first use.
    transport: Weak<Shared>,
    /// Publishers wait while `ready` holds this many messages.
    max_len: usize,
    /// Signalled when a full queue drained below its low-water mark (or closed).
    space: Notify,
    inner: Mutex<Queue>,
}

impl QueueShared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.inner)
    }

    /// Publishers are woken once `ready` drops below this: they then fill a
    /// batch of slots per wake-up instead of one.
    fn low_water(&self) -> usize {
        (self.max_len - self.max_len / 8).max(1)
    }
}

struct Message {
    /// Position in the queue's arrival order; requeued messages go back to
    /// their original place (as in RabbitMQ), not to the tail.
    seq: u64,
    envelope: Arc<Envelope>,
    redelivered: bool,
}

/// A fast hasher for delivery tags and event names (not DoS-resistant; the
/// keys are our own tags and the application's event names).
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Message>,
    /// delivery tag → (consumer id, message)
    unacked: HashMap<u64, (u64, Message), BuildHasherDefault<FastHasher>>,
    consumers: Vec<Consumer>,
    next_tag: u64,
    next_seq: u64,
    /// A publisher waits on `space`.
    publishers_waiting: bool,
    closed: bool,
}

impl Queue {
    fn push_new(&mut self, envelope: Arc<Envelope>) {
        self.next_seq += 1;
        self.ready.push_back(Message {
            seq: self.next_seq,
            envelope,
            redelivered: false,
        });
    }

    /// Puts a previously delivered message back at its original position.
    fn requeue(&mut self, mut msg: Message) {
        msg.redelivered = true;
        let at = self.ready.partition_point(|m| m.seq < msg.seq);
        self.ready.insert(at, msg);
    }

    /// Takes the wakers of idle consumers that can now make progress. All of
    /// them are woken (not one per message): a consumer whose task stopped
    /// polling must not strand a message another idle consumer could take.
    fn wakers(&mut self) -> Wakers {
        let mut out = Wakers::default();
        if self.ready.is_empty() {
            return out;
        }
        for c in &mut self.consumers {
            if c.in_flight < c.prefetch {
                if let Some(w) = c.waker.take() {
                    out.push(w);
                }
            }
        }
        out
    }

    /// Removes delivery `tag` from the unacked set, returning the message.
    fn settle(&mut self, tag: u64) -> Result<Message, TransportError> {
        let (consumer, msg) = self.unacked.remove(&tag).ok_or(TransportError::Settled)?;
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        Ok(msg)
    }
}

/// Wakers collected under a queue lock, woken after it is released.
#[derive(Default)]
struct Wakers {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl Wakers {
    fn push(&mut self, w: Waker) {
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.rest.push(w);
        }
    }
    fn wake(self) {
        if let Some(w) = self.first {
            w.wake();
        }
        for w in self.rest {
            w.wake();
        }
    }
}

struct Consumer {
    id: u64,
    prefetch: usize,
    in_flight: usize,
    /// Set while the consumer's stream waits for a message.
    waker: Option<Waker>,
}

/// Counts of one queue, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Messages waiting for a consumer.
    pub ready: usize,
    /// Messages delivered and not yet settled.
    pub unacked: usize,
    /// Active consumers.
    pub consumers: usize,
}

impl MemoryTransport {
    /// A new, empty transport whose queues hold at most
    /// [`DEFAULT_MAX_QUEUE_LEN`] ready messages each.
    pub fn new() -> Self {
        Self::with_max_queue_len(DEFAULT_MAX_QUEUE_LEN)
    }

    /// A new, empty transport whose group queues hold at most `max` ready
    /// messages each; publishing to a full queue waits until it drains.
    pub fn with_max_queue_len(max: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                max_queue_len: max.max(1),
            }),
        }
    }

    /// Counts for queue `name` (a group, or a group's dead-letter queue).
    pub fn queue_stats(&self, name: &str) -> Option<QueueStats> {
        let q = self.shared.lock().queues.get(name)?.clone();
        let q = q.lock();
        Some(QueueStats {
            ready: q.ready.len(),
            unacked: q.unacked.len(),
            consumers: q.consumers.len(),
        })
    }

    /// Closes the transport: subscriptions end, publishing fails.
    pub fn close(&self) {
        let queues: Vec<Arc<QueueShared>> = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.queues.values().cloned().collect()
        };
        for qs in queues {
            let wakers: Vec<Waker> = {
                let mut q = qs.lock();
                q.closed = true;
                q.consumers
                    .iter_mut()
                    .filter_map(|c| c.waker.take())
                    .collect()
            };
            qs.space.notify_waiters();
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    fn consume(&self, queue: &str, prefetch: u16) -> Result<Subscription, TransportError> {
        let (qs, id) = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(TransportError::Closed);
            }
            state.next_consumer += 1;
            let id = state.next_consumer;
            (state.queue(&self.shared, queue), id)
        };
        qs.lock().consumers.push(Consumer {
            id,
            prefetch: usize::from(prefetch.max(1)),
            in_flight: 0,
            waker: None,
        });
        Ok(Subscription::new(MemoryStream {
            queue: qs,
            consumer: id,
        }))
    }

    /// Routes `envelope` to every queue bound to its name, waiting while any
    /// of them is full.
    async fn route(&self, envelope: Arc<Envelope>) -> Result<(), TransportError> {
        let targets = {
            let state = self.shared.lock();
            if state.closed {
                return Err(TransportError::Closed);
            }
            match state.routes.get(&envelope.name) {
                Some(t) => t.clone(),
                // No group subscribed: unroutable, like an AMQP exchange without bindings.
                None => return Ok(()),
            }
        };
        if let [q] = &*targets {
            // One group (the common case): wait for room and push under one lock.
            let mut envelope = Some(envelope);
            loop {
                let notified = q.space.notified();
                tokio::pin!(notified);
                let wakers = {
                    let mut g = q.lock();
                    if g.closed {
                        return Err(TransportError::Closed);
                    }
                    if g.ready.len() < q.max_len {
                        g.push_new(envelope.take().expect("pushed once"));
                        Some(g.wakers())
                    } else {
                        g.publishers_waiting = true;
                        notified.as_mut().enable();
                        None
                    }
                };
                match wakers {
                    Some(w) => {
                        w.wake();
                        return Ok(());
                    }
                    None => notified.await,
                }
            }
        }
        // Fan-out: wait until every queue has room, then push to all, so a
        // cancelled publish never reached only some of the groups.
        'wait: loop {
            for q in targets.iter() {
                let notified = q.space.notified();
                tokio::pin!(notified);
                let full = {
                    let mut g = q.lock();
                    if g.closed {
                        return Err(TransportError::Closed);
                    }
                    let full = g.ready.len() >= q.max_len;
                    if full {
                        g.publishers_waiting = true;
                        notified.as_mut().enable();
                    }
                    full
                };
                if full {
                    notified.await;
                    continue 'wait;
                }
            }
            break;
        }
        for q in targets.iter() {
            let wakers = {
                let mut g = q.lock();
                g.push_new(envelope.clone());
                g.wakers()
            };
            wakers.wake();
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for MemoryTransport {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.route(Arc::new(envelope.clone())).await
    }

    async fn publish_shared(&self, envelope: Arc<Envelope>) -> Result<(), TransportError> {
        self.route(envelope).await
    }

    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        for envelope in envelopes {
            // One copy shared by every group's queue.
            self.route(Arc::new(envelope.clone())).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Subscriber for MemoryTransport {
    async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, TransportError> {
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(TransportError::Closed);
            }
            let q = state.queue(&self.shared, &spec.group);
            for event in &spec.events {
                let bound = state
                    .routes
                    .entry(event.clone())
                    .or_insert_with(|| Arc::from([]));
                if !bound.iter().any(|b| Arc::ptr_eq(b, &q)) {
                    let mut v = bound.to_vec();
                    v.push(q.clone());
                    *bound = Arc::from(v);
                }
            }
        }
        self.consume(&spec.group, spec.prefetch)
    }

    async fn subscribe_dead_letters(
        &self,
        group: &str,
        prefetch: u16,
    ) -> Result<Subscription, TransportError> {
        self.consume(&dead_letter_name(group), prefetch)
    }
}

struct MemoryAcker {
    queue: Arc<QueueShared>,
    tag: u64,
    settled: bool,
}

impl MemoryAcker {
    fn finish(&mut self, outcome: Outcome) -> Result<(), TransportError> {
        self.settled = true;
        let qs = &self.queue;
        let (msg, wakers) = {
            let mut q = qs.lock();
            let msg = q.settle(self.tag)?;
            let msg = match outcome {
                Outcome::Requeue => {
                    q.requeue(msg);
                    None
                }
                _ => Some(msg),
            };
            (msg, q.wakers())
        };
        wakers.wake();
        drop(msg);
        if let Outcome::DeadLetter(envelope) = outcome {
            let Some(transport) = qs.transport.upgrade() else {
                return Err(TransportError::Closed);
            };
            let dlq = transport
                .lock()
                .queue(&transport, &dead_letter_name(&qs.name));
            let wakers = {
                let mut q = dlq.lock();
                q.push_new(Arc::new(envelope));
                q.wakers()
            };
            wakers.wake();
        }
        Ok(())
    }
}

enum Outcome {
    Ack,
    Requeue,
    Drop,
    DeadLetter(Envelope),
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // A delivery dropped without being settled goes back to the queue:
        // losing it would break at-least-once.
        if !self.settled {
            let _ = self.finish(Outcome::Requeue);
        }
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), TransportError> {
        self.finish(Outcome::Ack)
    }
    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<(), TransportError> {
        self.finish(if requeue {
            Outcome::Requeue
        } else {
            Outcome::Drop
        })
    }
    async fn dead_letter(mut self: Box<Self>, envelope: Envelope) -> Result<(), TransportError> {
        self.finish(Outcome::DeadLetter(envelope))
    }
}

/// One consumer's deliveries, pulled from its queue. Dropping it requeues
/// every unacked delivery of this consumer, in original order, flagged
/// redelivered; their ackers then find them settled.
struct MemoryStream {
    queue: Arc<QueueShared>,
    consumer: u64,
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        let wakers = {
            let mut q = self.queue.lock();
            q.consumers.retain(|c| c.id != self.consumer);
            let mut mine: Vec<u64> = q
                .unacked
                .iter()
                .filter(|(_, (c, _))| *c == self.consumer)
                .map(|(t, _)| *t)
                .collect();
            mine.sort_unstable();
            for t in mine {
                if let Some((_, m)) = q.unacked.remove(&t) {
                    q.requeue(m);
                }
            }
            q.wakers()
        };
        wakers.wake();
    }
}

impl Stream for MemoryStream {
    type Item = Result<Delivery, TransportError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &*self;
        let qs = &this.queue;
        let mut q = qs.lock();
        if q.closed {
            return Poll::Ready(None);
        }
        let Some(ci) = q.consumers.iter().position(|c| c.id == this.consumer) else {
            return Poll::Ready(None);
        };
        let has_credit = q.consumers[ci].in_flight < q.consumers[ci].prefetch;
        let msg = if has_credit {
            q.ready.pop_front()
        } else {
            None
        };
        let Some(msg) = msg else {
            let c = &mut q.consumers[ci];
            match &c.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => c.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        q.next_tag += 1;
        let tag = q.next_tag;
        q.consumers[ci].in_flight += 1;
        let envelope = msg.envelope.clone();
        let redelivered = msg.redelivered;
        q.unacked.insert(tag, (this.consumer, msg));
        let wake_publishers = q.publishers_waiting && q.ready.len() < qs.low_water();
        if wake_publishers {
            q.publishers_waiting = false;
        }
        drop(q);
        if wake_publishers {
            qs.space.notify_waiters();
        }
        Poll::Ready(Some(Ok(Delivery::new(
            envelope,
            redelivered,
            Box::new(MemoryAcker {
                queue: qs.clone(),
                tag,
                settled: false,
            }),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::{envelope, expect_delivery};

    async fn publish_in_background(
        t: &MemoryTransport,
        n: u64,
    ) -> tokio::task::JoinHandle<Result<(), TransportError>> {
        let t = t.clone();
        tokio::spawn(async move {
            for i in 0..n {
                t.publish(&envelope("ev.bp", Some("k"), i)).await?;
            }
            Ok(())
        })
    }

    #[tokio::test]
    async fn full_queue_makes_publishers_wait_until_it_drains() {
        let t = MemoryTransport::with_max_queue_len(8);
        let mut sub = t
            .subscribe(SubscriptionSpec::new("g-bp", ["ev.bp"]).prefetch(1))
            .await
            .unwrap();
        let publisher = publish_in_background(&t, 20).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // 8 ready + 1 delivered to the consumer's prefetch on its first poll at most.
        let stats = t.queue_stats("g-bp").unwrap();
        assert_eq!(stats.ready, 8, "queue grew past its limit: {stats:?}");
        assert!(!publisher.is_finished(), "publisher did not wait");
        for i in 0..20 {
            let d = expect_delivery(&mut sub, "backpressure").await;
            assert_eq!(d.envelope.headers.get("x-test-n"), Some(&*i.to_string()));
            d.ack().await.unwrap();
        }
        publisher.await.unwrap().unwrap();
        assert_eq!(t.queue_stats("g-bp").unwrap().ready, 0);
    }

    #[tokio::test]
    async fn close_releases_waiting_publishers() {
        let t = MemoryTransport::with_max_queue_len(2);
        let _sub = t
            .subscribe(SubscriptionSpec::new("g-bp", ["ev.bp"]).prefetch(1))
            .await
            .unwrap();
        let publisher = publish_in_background(&t, 10).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!publisher.is_finished());
        t.close();
        let r = tokio::time::timeout(Duration::from_secs(5), publisher)
            .await
            .expect("publisher still blocked after close")
            .unwrap();
        assert!(matches!(r, Err(TransportError::Closed)));
    }

    #[tokio::test]
    async fn fan_out_waits_for_every_full_group() {
        let t = MemoryTransport::with_max_queue_len(4);
        let spec = |g: &str| SubscriptionSpec::new(g, ["ev.bp"]).prefetch(1);
        let mut a = t.subscribe(spec("g-a")).await.unwrap();
        let mut b = t.subscribe(spec("g-b")).await.unwrap();
        let publisher = publish_in_background(&t, 12).await;
        // `a` drains, but the full queue of `b` holds the publisher back:
        // no group gets ahead of another by more than the limit.
        for _ in 0..4 {
            expect_delivery(&mut a, "a").await.ack().await.unwrap();
        }
        crate::testing::expect_quiet(&mut a, "a ahead of full b").await;
        assert_eq!(t.queue_stats("g-b").unwrap().ready, 4);
        assert!(!publisher.is_finished());
        for _ in 0..4 {
            expect_delivery(&mut b, "b").await.ack().await.unwrap();
        }
        for _ in 4..12 {
            expect_delivery(&mut b, "b").await.ack().await.unwrap();
            expect_delivery(&mut a, "a").await.ack().await.unwrap();
        }
        publisher.await.unwrap().unwrap();
    }
}
