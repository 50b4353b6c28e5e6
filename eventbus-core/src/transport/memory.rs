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
//! Events that no group is bound to are kept in a bounded buffer
//! ([`MemoryTransport::unrouted`], default [`DEFAULT_MAX_UNROUTED`], the
//! oldest dropped first), like the AMQP transport's `eventbus.unrouted`
//! queue; a group that subscribes later does not receive them.
//!
//! A partitioned group ([`SubscriptionSpec::partitions`] `P > 1`) has `P`
//! queues `<group>.p<i>`; an event goes to partition
//! `HashPartitioner.partition(partition_key(event), P)` (see
//! [`HashPartitioner`](crate::worker::HashPartitioner) and
//! [`partition_key`](super::partition_key)). Each partition is owned by one
//! subscription of the group; ownership is rebalanced (sticky, at most
//! `ceil(P/N)` per subscription) whenever a subscription joins or is
//! dropped, and a partition's new owner starts consuming only once the
//! previous owner's deliveries of it are settled.
//!
//! Each queue has its own lock; publishers, consumers and ackers of
//! different groups never contend. Consumers pull from their queue (no
//! per-consumer channel), so a busy consumer takes a message without any
//! wake-up, and an idle one is woken once; the bus's receiver takes
//! everything ready under one lock. Nothing on the per-message path is
//! boxed: publishing with room in the queue and settling complete
//! synchronously ([`TransportFuture::ready`]), and a delivery's acker travels
//! inline. The bus's workers settle the acks of deliveries they handled back
//! to back under one lock, and acked messages are freed by the next
//! publisher (where they were allocated) rather than by the acking thread.
//!
//! [`MemoryTransport::wait_until`] waits for a condition on the queues
//! without polling: every publish and settlement (ack, nack, requeue, dead
//! letter, a consumer going away) wakes it — at the cost of one atomic load
//! per operation while nobody waits.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context as TaskContext, Poll, Waker};

use async_trait::async_trait;
use futures_util::Stream;
use tokio::sync::Notify;

use super::{
    dead_letter_name, partition_key, partition_name, Delivery, Publisher, Subscriber, Subscription,
    SubscriptionSpec, TransportError, TransportFuture, DEFAULT_MAX_UNROUTED,
};
use crate::worker::{HashPartitioner, Partitioner};
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
    max_unrouted: usize,
    /// Fired on every change of a queue's messages.
    activity: Arc<Activity>,
}

/// Wakes [`MemoryTransport::wait_until`] on every publish and settlement.
#[derive(Default)]
struct Activity {
    /// Waiters now: changes notify only while there are any.
    watchers: std::sync::atomic::AtomicUsize,
    changed: Notify,
}

impl Activity {
    fn watched(&self) -> bool {
        self.watchers.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

/// Counts a waiter of [`Activity`] while it lives.
struct Watching<'a>(&'a Activity);

impl<'a> Watching<'a> {
    fn new(activity: &'a Activity) -> Self {
        activity
            .watchers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(activity)
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0
            .watchers
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
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
    /// Events no group was bound to, oldest first (bounded).
    unrouted: VecDeque<Arc<Envelope>>,
    next_consumer: u64,
    closed: bool,
}

impl State {
    /// The queue `name`, created empty if missing.
    fn queue(&mut self, shared: &Arc<Shared>, name: &str) -> Arc<QueueShared> {
        self.queue_of(shared, name, name)
    }

    /// The queue `name` of `group` (whose dead-letter queue it uses),
    /// created empty if missing.
    fn queue_of(&mut self, shared: &Arc<Shared>, name: &str, group: &str) -> Arc<QueueShared> {
        self.queues
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(QueueShared::new(shared, name, group, None)))
            .clone()
    }

    /// Declares `spec`'s queue(s), dead-letter queue and bindings; returns
    /// the partitioned group if it is one.
    fn declare(
        &mut self,
        shared: &Arc<Shared>,
        spec: &SubscriptionSpec,
    ) -> Result<Option<Arc<PartGroup>>, TransportError> {
        if self.closed {
            return Err(TransportError::Closed);
        }
        spec.validate()?;
        let existing = self.queues.get(&spec.group).cloned();
        let (q, group) = match existing {
            Some(q) => {
                let had = q.parts.as_ref().map_or(0, |g| g.queues.len());
                let wants = if spec.is_partitioned() {
                    usize::from(spec.partitions)
                } else {
                    0
                };
                if had != wants {
                    return Err(TransportError::Rejected(format!(
                        "group {} is declared with {had} partitions, not {wants}",
                        spec.group
                    )));
                }
                let g = q.parts.clone();
                (q, g)
            }
            None if spec.is_partitioned() => {
                let queues = (0..spec.partitions)
                    .map(|i| self.queue_of(shared, &partition_name(&spec.group, i), &spec.group))
                    .collect();
                let g = Arc::new(PartGroup {
                    queues,
                    state: Mutex::new(GroupState {
                        owner: vec![None; usize::from(spec.partitions)],
                        members: Vec::new(),
                    }),
                });
                let router = Arc::new(QueueShared::new(
                    shared,
                    &spec.group,
                    &spec.group,
                    Some(g.clone()),
                ));
                self.queues.insert(spec.group.clone(), router.clone());
                (router, Some(g))
            }
            None => (self.queue(shared, &spec.group), None),
        };
        self.queue(shared, &dead_letter_name(&spec.group));
        for event in &spec.events {
            let bound = self
                .routes
                .entry(event.clone())
                .or_insert_with(|| Arc::from([]));
            if !bound.iter().any(|b| Arc::ptr_eq(b, &q)) {
                let mut v = bound.to_vec();
                v.push(q.clone());
                *bound = Arc::from(v);
            }
        }
        Ok(group)
    }
}

/// One queue and what waits on it.
struct QueueShared {
    name: Arc<str>,
    /// The group whose dead-letter queue this queue's dead letters go to.
    group: Arc<str>,
    /// For a partitioned group's entry in the routes: its partitions (this
    /// queue itself holds nothing then).
    parts: Option<Arc<PartGroup>>,
    /// For creating the dead-letter queue on first use.
    transport: Weak<Shared>,
    /// Publishers wait while `ready` holds this many messages.
    max_len: usize,
    /// Signalled when a full queue drained below its low-water mark (or closed).
    space: Notify,
    inner: Mutex<Queue>,
}

impl QueueShared {
    fn new(shared: &Arc<Shared>, name: &str, group: &str, parts: Option<Arc<PartGroup>>) -> Self {
        QueueShared {
            name: Arc::from(name),
            group: Arc::from(group),
            parts,
            transport: Arc::downgrade(shared),
            max_len: shared.max_queue_len,
            space: Notify::new(),
            inner: Mutex::new(Queue {
                activity: shared.activity.clone(),
                ..Queue::default()
            }),
        }
    }

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
        // Eight bytes per step: event names are hashed on every publish.
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let word = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        let word = u64::from_le_bytes(tail) ^ (rest.len() as u64) << 59;
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Delivered, unsettled messages, by delivery tag.
///
/// A slab: a tag is a slot index plus that slot's generation, so settling
/// finds its message without hashing, slots are reused as deliveries are
/// settled (the slab grows only to the most deliveries ever unacked at
/// once), and an old tag whose slot was reused finds a different
/// generation there: settled already.
#[derive(Default)]
struct Unacked {
    slots: Vec<Slot>,
    /// Indices of free slots.
    free: Vec<u32>,
    len: usize,
}

enum Slot {
    Free {
        generation: u32,
    },
    Used {
        generation: u32,
        consumer: u64,
        msg: Message,
    },
}

impl Unacked {
    /// Stores `msg`, delivered to `consumer`; returns its tag.
    fn insert(&mut self, consumer: u64, msg: Message) -> u64 {
        self.len += 1;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::Free { generation: 0 });
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 unacked deliveries")
            }
        };
        let slot = &mut self.slots[index as usize];
        let generation = match slot {
            Slot::Free { generation } => *generation,
            Slot::Used { .. } => unreachable!("free list holds a used slot"),
        };
        *slot = Slot::Used {
            generation,
            consumer,
            msg,
        };
        u64::from(generation) << 32 | u64::from(index)
    }

    /// Takes the message of `tag` out: `(consumer, message)`.
    fn remove(&mut self, tag: u64) -> Option<(u64, Message)> {
        let index = tag as u32;
        let slot = self.slots.get_mut(index as usize)?;
        match slot {
            Slot::Used { generation, .. } if u64::from(*generation) == tag >> 32 => {
                let next = Slot::Free {
                    generation: generation.wrapping_add(1),
                };
                let Slot::Used { consumer, msg, .. } = std::mem::replace(slot, next) else {
                    unreachable!()
                };
                self.free.push(index);
                self.len -= 1;
                Some((consumer, msg))
            }
            _ => None,
        }
    }

    /// Tags of `consumer`'s deliveries.
    fn tags_of(&self, consumer: u64) -> Vec<u64> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Used {
                    generation,
                    consumer: c,
                    ..
                } if *c == consumer => Some(u64::from(*generation) << 32 | i as u64),
                _ => None,
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Message>,
    unacked: Unacked,
    consumers: Vec<Consumer>,
    next_seq: u64,
    /// A publisher waits on `space`.
    publishers_waiting: bool,
    closed: bool,
    /// Acked messages left for the next publisher to drop (see [`Garbage`]).
    garbage: Garbage,
    /// A partition's next owner, waiting for the previous owner's
    /// deliveries to be settled: woken once `unacked` is empty.
    handover: Option<Waker>,
    /// The transport's, notified with the wakers (see [`Queue::wakers`]).
    activity: Arc<Activity>,
}

/// Acked messages whose memory publishers to the queue free.
///
/// A message is allocated on the publisher's thread and usually acked on a
/// worker's; freeing it there makes the two threads contend for the
/// allocator (glibc's arena locks) on every message. Instead, acked
/// messages wait here and each publish (which takes the queue lock anyway)
/// takes up to [`Garbage::PER_PUBLISH`] of them to drop: freed where they
/// were allocated, a few at a time, so the allocator's thread cache hands
/// the memory straight to the next messages. Bounded: past
/// [`Garbage::MAX_LEN`] messages or [`Garbage::MAX_BYTES`] of payload the
/// acking side frees them itself, so little memory waits for a publisher.
#[derive(Default)]
struct Garbage {
    messages: Vec<Message>,
    bytes: usize,
}

impl Garbage {
    const MAX_LEN: usize = 512;
    const MAX_BYTES: usize = 256 * 1024;
    /// Most messages one publish takes: one (one freed per one allocated
    /// keeps the thread cache balanced), two while more than
    /// [`Garbage::BACKLOG`] wait, so that publishing drains what acking adds.
    const PER_PUBLISH: usize = 2;
    const BACKLOG: usize = 64;

    /// Keeps `msg` for a publisher to drop; returns what the caller has to
    /// drop itself (once the lock is released) when the bound is reached.
    fn keep(&mut self, msg: Message) -> Option<Vec<Message>> {
        self.bytes += msg.envelope.payload.len();
        self.messages.push(msg);
        if self.messages.len() >= Self::MAX_LEN || self.bytes >= Self::MAX_BYTES {
            self.bytes = 0;
            return Some(std::mem::take(&mut self.messages));
        }
        None
    }

    /// A few kept messages, for a publisher to drop once the lock is released.
    fn take(&mut self) -> [Option<Message>; Self::PER_PUBLISH] {
        let n = if self.messages.len() > Self::BACKLOG {
            Self::PER_PUBLISH
        } else {
            1
        };
        let taken: [Option<Message>; Self::PER_PUBLISH] =
            std::array::from_fn(|i| if i < n { self.messages.pop() } else { None });
        for m in taken.iter().flatten() {
            self.bytes = self.bytes.saturating_sub(m.envelope.payload.len());
        }
        taken
    }
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

    /// [`Queue::push_new`] for a publisher, which also takes a few of the
    /// acked messages waiting to be freed (drop them after the lock).
    fn publish(&mut self, envelope: Arc<Envelope>) -> [Option<Message>; Garbage::PER_PUBLISH] {
        self.push_new(envelope);
        self.garbage.take()
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
    ///
    /// Called after every change of the queue's messages, so it also
    /// arranges for [`MemoryTransport::wait_until`] to be woken.
    fn wakers(&mut self) -> Wakers {
        let mut out = Wakers::default();
        if self.activity.watched() {
            out.activity = Some(self.activity.clone());
        }
        if self.handover.is_some() && self.unacked.len() == 0 {
            out.push(self.handover.take().expect("checked"));
        }
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
        let (consumer, msg) = self.unacked.remove(tag).ok_or(TransportError::Settled)?;
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
    /// Set when someone waits in [`MemoryTransport::wait_until`].
    activity: Option<Arc<Activity>>,
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
        if let Some(a) = self.activity {
            a.changed.notify_waiters();
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
        Self::with_limits(max, DEFAULT_MAX_UNROUTED)
    }

    /// A new, empty transport whose group queues hold at most
    /// `max_queue_len` ready messages each, and which keeps the last
    /// `max_unrouted` events no group was bound to
    /// ([`MemoryTransport::unrouted`]).
    pub fn with_limits(max_queue_len: usize, max_unrouted: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                max_queue_len: max_queue_len.max(1),
                max_unrouted,
                activity: Arc::default(),
            }),
        }
    }

    /// The events published while no group was bound to their name, oldest
    /// first (at most the bound given to [`MemoryTransport::with_limits`],
    /// default [`DEFAULT_MAX_UNROUTED`]; older ones were dropped).
    pub fn unrouted(&self) -> Vec<Arc<Envelope>> {
        self.shared.lock().unrouted.iter().cloned().collect()
    }

    /// Removes and returns the unrouted events (see [`MemoryTransport::unrouted`]).
    pub fn take_unrouted(&self) -> Vec<Arc<Envelope>> {
        self.shared.lock().unrouted.drain(..).collect()
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

    /// Messages not yet settled across every queue (ready + unacked): zero
    /// when everything published was handled (or dead-lettered and the
    /// dead letters consumed). What `RunningBus::wait_idle` and the test
    /// harness wait for.
    pub fn pending(&self) -> usize {
        let queues: Vec<Arc<QueueShared>> = self.shared.lock().queues.values().cloned().collect();
        queues
            .iter()
            .map(|q| {
                let q = q.lock();
                q.ready.len() + q.unacked.len()
            })
            .sum()
    }

    /// Ready and unacked messages of `group` (all its partitions).
    fn group_pending(&self, group: &str) -> u64 {
        let Some(q) = self.shared.lock().queues.get(group).cloned() else {
            return 0;
        };
        let count = |q: &QueueShared| {
            let q = q.lock();
            (q.ready.len() + q.unacked.len()) as u64
        };
        let mut n = count(&q);
        if let Some(parts) = &q.parts {
            n += parts.queues.iter().map(|p| count(p)).sum::<u64>();
        }
        n
    }

    /// Waits until `done` holds, checking it now and again after every
    /// publish and settlement on this transport (no polling, no timer: put
    /// a deadline around it). For conditions on the queues, such as
    /// `pending() == 0`, or on what handlers record before they settle.
    pub async fn wait_until(&self, mut done: impl FnMut() -> bool) {
        let activity = &self.shared.activity;
        let _watching = Watching::new(activity);
        loop {
            let changed = activity.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done() {
                return;
            }
            changed.await;
        }
    }

    /// Puts `envelope` into `group`'s own queue (for a partitioned group,
    /// the partition of its key) without routing it to any other group: a
    /// dead letter sent back for another try. Does not wait for room.
    /// Fails if `group` has no queue.
    pub fn requeue_to_group(&self, group: &str, envelope: Envelope) -> Result<(), TransportError> {
        let q = {
            let state = self.shared.lock();
            if state.closed {
                return Err(TransportError::Closed);
            }
            state.queues.get(group).cloned()
        }
        .ok_or_else(|| TransportError::Rejected(format!("no queue for group {group:.80}")))?;
        let envelope = Arc::new(envelope);
        let q = pick(&q, &envelope);
        let wakers = {
            let mut g = q.lock();
            if g.closed {
                return Err(TransportError::Closed);
            }
            g.push_new(envelope);
            g.wakers()
        };
        wakers.wake();
        Ok(())
    }

    /// Closes the transport: subscriptions end, publishing fails.
    pub fn close(&self) {
        let queues: Vec<Arc<QueueShared>> = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.queues.values().cloned().collect()
        };
        for qs in &queues {
            if let Some(g) = &qs.parts {
                let wakers: Vec<Waker> = lock(&g.state)
                    .members
                    .iter_mut()
                    .filter_map(|m| m.waker.take())
                    .collect();
                wakers.into_iter().for_each(Waker::wake);
            }
        }
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
        Ok(Subscription::memory(MemoryStream {
            queue: qs,
            consumer: id,
        }))
    }

    /// The queues bound to `name` (`None`: unroutable, like an AMQP
    /// exchange without bindings).
    ///
    /// An unroutable `envelope` is kept in the unrouted buffer.
    fn targets(
        &self,
        envelope: &Arc<Envelope>,
    ) -> Result<Option<Arc<[Arc<QueueShared>]>>, TransportError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TransportError::Closed);
        }
        let targets = state.routes.get(&*envelope.name).cloned();
        if targets.is_none() && self.shared.max_unrouted > 0 {
            if state.unrouted.len() >= self.shared.max_unrouted {
                state.unrouted.pop_front();
            }
            state.unrouted.push_back(envelope.clone());
        }
        Ok(targets)
    }

    /// Routes `envelope` without waiting: `Ok` with the outcome once it is
    /// in every bound queue (or failed), `Err` with the envelope untouched
    /// when a queue is full and the publisher has to wait ([`Self::route`]).
    fn try_route(
        &self,
        envelope: Arc<Envelope>,
    ) -> Result<Result<(), TransportError>, Arc<Envelope>> {
        let targets = match self.targets(&envelope) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(Ok(())),
            Err(e) => return Ok(Err(e)),
        };
        if let [q] = &*targets {
            // One group (the common case): check for room and push under one lock.
            let q = pick(q, &envelope);
            let (wakers, garbage) = {
                let mut g = q.lock();
                if g.closed {
                    return Ok(Err(TransportError::Closed));
                }
                if g.ready.len() >= q.max_len {
                    return Err(envelope);
                }
                let garbage = g.publish(envelope);
                (g.wakers(), garbage)
            };
            wakers.wake();
            drop(garbage);
            return Ok(Ok(()));
        }
        // Fan-out: only if every queue has room, so that no group gets it
        // while another is still waiting.
        for q in targets.iter() {
            let q = pick(q, &envelope);
            let g = q.lock();
            if g.closed {
                return Ok(Err(TransportError::Closed));
            }
            if g.ready.len() >= q.max_len {
                return Err(envelope);
            }
        }
        push_all(&targets, &envelope);
        Ok(Ok(()))
    }

    /// Routes `envelope` to every queue bound to its name, waiting while any
    /// of them is full.
    async fn route(&self, envelope: Arc<Envelope>) -> Result<(), TransportError> {
        let envelope = match self.try_route(envelope) {
            Ok(done) => return done,
            Err(envelope) => envelope,
        };
        let Some(targets) = self.targets(&envelope)? else {
            return Ok(());
        };
        if let [q] = &*targets {
            let q = pick(q, &envelope);
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
                        let garbage = g.publish(envelope.take().expect("pushed once"));
                        Some((g.wakers(), garbage))
                    } else {
                        g.publishers_waiting = true;
                        notified.as_mut().enable();
                        None
                    }
                };
                match wakers {
                    Some((w, garbage)) => {
                        w.wake();
                        drop(garbage);
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
                let q = pick(q, &envelope);
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
        push_all(&targets, &envelope);
        Ok(())
    }
}

/// The queue `envelope` goes to among `q`'s partitions (`q` itself if
/// its group is not partitioned).
fn pick<'a>(q: &'a Arc<QueueShared>, envelope: &Envelope) -> &'a Arc<QueueShared> {
    match &q.parts {
        None => q,
        Some(g) => {
            let i = HashPartitioner.partition(&partition_key(envelope), g.queues.len());
            &g.queues[i]
        }
    }
}

/// Pushes `envelope` to every queue of `targets` (room was checked).
fn push_all(targets: &[Arc<QueueShared>], envelope: &Arc<Envelope>) {
    for q in targets {
        let q = pick(q, envelope);
        let (wakers, garbage) = {
            let mut g = q.lock();
            let garbage = g.publish(envelope.clone());
            (g.wakers(), garbage)
        };
        wakers.wake();
        drop(garbage);
    }
}

#[async_trait]
impl Publisher for MemoryTransport {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.route(Arc::new(envelope.clone())).await
    }

    fn publish_shared(&self, envelope: Arc<Envelope>) -> TransportFuture<'_> {
        // Synchronous while the queues have room: no future to box.
        match self.try_route(envelope) {
            Ok(done) => TransportFuture::ready(done),
            Err(envelope) => TransportFuture::new(self.route(envelope)),
        }
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
    async fn pending(&self, group: &str) -> Result<Option<u64>, TransportError> {
        Ok(Some(self.group_pending(group)))
    }

    async fn wait_settled(&self, groups: &[String]) -> Result<bool, TransportError> {
        self.wait_until(|| groups.iter().all(|g| self.group_pending(g) == 0))
            .await;
        Ok(true)
    }

    async fn declare(&self, spec: &SubscriptionSpec) -> Result<(), TransportError> {
        self.shared.lock().declare(&self.shared, spec).map(drop)
    }

    async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, TransportError> {
        let (group, id) = {
            let mut state = self.shared.lock();
            let group = state.declare(&self.shared, &spec)?;
            state.next_consumer += 1;
            (group, state.next_consumer)
        };
        match group {
            Some(g) => Ok(g.join(id, spec.prefetch)),
            None => self.consume(&spec.group, spec.prefetch),
        }
    }

    async fn subscribe_dead_letters(
        &self,
        group: &str,
        prefetch: u16,
    ) -> Result<Subscription, TransportError> {
        self.consume(&dead_letter_name(group), prefetch)
    }
}

/// Settles one delivery of a memory queue, synchronously. Travels inline
/// in its [`Delivery`] (no allocation per delivery).
pub(super) struct MemoryAcker {
    queue: Arc<QueueShared>,
    tag: u64,
    settled: bool,
}

impl MemoryAcker {
    pub(super) fn ack(mut self) -> Result<(), TransportError> {
        self.finish(Outcome::Ack)
    }

    pub(super) fn nack(mut self, requeue: bool) -> Result<(), TransportError> {
        self.finish(if requeue {
            Outcome::Requeue
        } else {
            Outcome::Drop
        })
    }

    pub(super) fn dead_letter(mut self, envelope: Envelope) -> Result<(), TransportError> {
        self.finish(Outcome::DeadLetter(Box::new(envelope)))
    }

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
        // Freed outside the lock.
        drop(msg);
        if let Outcome::DeadLetter(envelope) = outcome {
            let Some(transport) = qs.transport.upgrade() else {
                return Err(TransportError::Closed);
            };
            let dlq = transport
                .lock()
                .queue(&transport, &dead_letter_name(&qs.group));
            let wakers = {
                let mut q = dlq.lock();
                q.push_new(Arc::from(envelope));
                q.wakers()
            };
            wakers.wake();
        }
        Ok(())
    }
}

/// Acks of memory deliveries, settled together: one lock per queue for a
/// run of deliveries instead of one per delivery.
///
/// The bus's workers use it for deliveries handled back to back without
/// waiting, and settle the batch before they wait for anything, so an ack
/// is held back for no more than the time it takes to run the next few
/// handlers. Dropping the batch settles it.
#[derive(Default)]
pub(crate) struct AckBatch {
    ackers: Vec<MemoryAcker>,
}

impl AckBatch {
    /// Most acks held before they are settled anyway.
    const MAX: usize = 64;

    pub(super) fn push(&mut self, acker: MemoryAcker) {
        self.ackers.push(acker);
        if self.ackers.len() >= Self::MAX {
            self.settle();
        }
    }

    /// Settles every held ack; failures (deliveries already settled, say
    /// because their consumer went away and they were requeued) are logged.
    pub(crate) fn settle(&mut self) {
        let mut ackers = std::mem::take(&mut self.ackers);
        let mut rest = &mut ackers[..];
        while let Some(first) = rest.first() {
            let queue = first.queue.clone();
            // Ackers of the same queue are adjacent in practice (one worker
            // serves one group); settle each run under one lock.
            let run = rest
                .iter()
                .position(|a| !Arc::ptr_eq(&a.queue, &queue))
                .unwrap_or(rest.len());
            let (now, later) = rest.split_at_mut(run);
            let mut failed = 0usize;
            let mut overflow = Vec::new();
            let wakers = {
                let mut q = queue.lock();
                for acker in now.iter_mut() {
                    acker.settled = true;
                    match q.settle(acker.tag) {
                        // Freed by the next publisher (see `Garbage`).
                        Ok(msg) => {
                            if let Some(full) = q.garbage.keep(msg) {
                                overflow.extend(full);
                            }
                        }
                        Err(_) => failed += 1,
                    }
                }
                q.wakers()
            };
            wakers.wake();
            // Freed outside the lock.
            drop(overflow);
            if failed > 0 {
                tracing::warn!(
                    queue = %queue.name,
                    failed,
                    "could not settle deliveries (already settled or consumer gone)"
                );
            }
            rest = later;
        }
        ackers.clear();
        self.ackers = ackers;
    }
}

impl Drop for AckBatch {
    fn drop(&mut self) {
        self.settle();
    }
}

enum Outcome {
    Ack,
    Requeue,
    Drop,
    DeadLetter(Box<Envelope>),
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

/// One consumer's deliveries, pulled from its queue. Dropping it requeues
/// every unacked delivery of this consumer, in original order, flagged
/// redelivered; their ackers then find them settled.
pub(super) struct MemoryStream {
    queue: Arc<QueueShared>,
    consumer: u64,
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        let wakers = {
            let mut q = self.queue.lock();
            q.consumers.retain(|c| c.id != self.consumer);
            let mut mine: Vec<Message> = q
                .unacked
                .tags_of(self.consumer)
                .into_iter()
                .filter_map(|t| q.unacked.remove(t).map(|(_, m)| m))
                .collect();
            mine.sort_unstable_by_key(|m| m.seq);
            for m in mine {
                q.requeue(m);
            }
            q.wakers()
        };
        wakers.wake();
    }
}

/// What [`MemoryStream::take`] found besides deliveries.
pub(super) enum Taken {
    /// Nothing more ready now (or no credit left); the stream goes on.
    Pending,
    /// The consumer or the transport was closed.
    Ended,
}

impl MemoryStream {
    /// Takes up to `max` ready messages (within the consumer's prefetch)
    /// under one lock, appending their deliveries to `out`.
    pub(super) fn take(&self, max: usize, out: &mut Vec<Delivery>) -> Taken {
        self.take_with(max, |d| out.push(d), None)
    }

    /// [`MemoryStream::take`]; when nothing could be taken, registers
    /// `waker` (if given) to be woken once a message is ready for this
    /// consumer.
    fn take_with(&self, max: usize, out: impl FnMut(Delivery), waker: Option<&Waker>) -> Taken {
        take_from(&self.queue, self.consumer, max, out, waker)
    }
}

/// Takes up to `max` ready messages of `qs` for `consumer` (within its
/// prefetch) under one lock; when nothing could be taken, registers
/// `waker` (if given). `Ended` if the queue is closed or the consumer gone.
fn take_from(
    qs: &Arc<QueueShared>,
    consumer: u64,
    max: usize,
    mut out: impl FnMut(Delivery),
    waker: Option<&Waker>,
) -> Taken {
    let mut q = qs.lock();
    if q.closed {
        return Taken::Ended;
    }
    let Some(ci) = q.consumers.iter().position(|c| c.id == consumer) else {
        return Taken::Ended;
    };
    let credit = q.consumers[ci].prefetch - q.consumers[ci].in_flight.min(q.consumers[ci].prefetch);
    let n = credit.min(max).min(q.ready.len());
    if n == 0 {
        if let Some(waker) = waker {
            let c = &mut q.consumers[ci];
            match &c.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => c.waker = Some(waker.clone()),
            }
        }
        return Taken::Pending;
    }
    q.consumers[ci].in_flight += n;
    for _ in 0..n {
        let msg = q.ready.pop_front().expect("counted");
        let envelope = msg.envelope.clone();
        let redelivered = msg.redelivered;
        let tag = q.unacked.insert(consumer, msg);
        out(Delivery::memory(
            envelope,
            redelivered,
            MemoryAcker {
                queue: qs.clone(),
                tag,
                settled: false,
            },
        ));
    }
    let wake_publishers = q.publishers_waiting && q.ready.len() < qs.low_water();
    if wake_publishers {
        q.publishers_waiting = false;
    }
    drop(q);
    if wake_publishers {
        qs.space.notify_waiters();
    }
    Taken::Pending
}

impl Stream for MemoryStream {
    type Item = Result<Delivery, TransportError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let mut one = None;
        match self.take_with(1, |d| one = Some(d), Some(cx.waker())) {
            Taken::Ended => Poll::Ready(None),
            Taken::Pending => match one {
                Some(d) => Poll::Ready(Some(Ok(d))),
                None => Poll::Pending,
            },
        }
    }
}

/// A partitioned group of the memory transport: its partition queues and
/// which subscription (member) owns which.
struct PartGroup {
    queues: Vec<Arc<QueueShared>>,
    state: Mutex<GroupState>,
}

struct GroupState {
    /// Partition index → owning member.
    owner: Vec<Option<u64>>,
    /// Live members in join order.
    members: Vec<Member>,
}

struct Member {
    id: u64,
    prefetch: usize,
    /// Set while the member's stream waits.
    waker: Option<Waker>,
    owned: tokio::sync::watch::Sender<Vec<u16>>,
}

impl PartGroup {
    /// A new member (subscription) of the group; rebalances.
    fn join(self: &Arc<Self>, id: u64, prefetch: u16) -> Subscription {
        let (owned, rx) = tokio::sync::watch::channel(Vec::new());
        let wakers = {
            let mut st = lock(&self.state);
            st.members.push(Member {
                id,
                prefetch: usize::from(prefetch.max(1)),
                waker: None,
                owned,
            });
            self.rebalance(&mut st)
        };
        wakers.into_iter().for_each(Waker::wake);
        Subscription::new(PartitionedStream {
            group: self.clone(),
            member: id,
            next: 0,
        })
        .with_partitions(rx)
    }

    /// Sticky rebalance: owners keep their partitions up to the fair share
    /// `ceil(P/N)`; partitions of departed members and above the share are
    /// given to the members with the fewest. A member losing a partition is
    /// detached from its queue at once (its unsettled deliveries stay its
    /// own); the new owner attaches once they are settled (see
    /// [`PartitionedStream`]). Returns the members' wakers.
    fn rebalance(&self, st: &mut GroupState) -> Vec<Waker> {
        let n = st.members.len();
        let mut count: HashMap<u64, usize> = st.members.iter().map(|m| (m.id, 0)).collect();
        for o in st.owner.iter_mut() {
            match o.and_then(|m| count.get_mut(&m)) {
                Some(c) => *c += 1,
                None => *o = None,
            }
        }
        if n > 0 {
            let share = st.owner.len().div_ceil(n);
            for i in (0..st.owner.len()).rev() {
                if let Some(m) = st.owner[i] {
                    let c = count.get_mut(&m).expect("counted");
                    if *c > share {
                        *c -= 1;
                        st.owner[i] = None;
                        self.queues[i].lock().consumers.retain(|c| c.id != m);
                    }
                }
            }
            for i in 0..st.owner.len() {
                if st.owner[i].is_none() {
                    let m = st
                        .members
                        .iter()
                        .min_by_key(|m| count[&m.id])
                        .expect("n > 0")
                        .id;
                    *count.get_mut(&m).expect("counted") += 1;
                    st.owner[i] = Some(m);
                }
            }
        }
        let mut wakers = Vec::new();
        for m in &mut st.members {
            let mine: Vec<u16> = (0..st.owner.len())
                .filter(|&i| st.owner[i] == Some(m.id))
                .map(|i| i as u16)
                .collect();
            m.owned.send_if_modified(|v| {
                let changed = *v != mine;
                *v = mine;
                changed
            });
            wakers.extend(m.waker.take());
        }
        wakers
    }
}

/// One member's deliveries from the partitions it owns.
struct PartitionedStream {
    group: Arc<PartGroup>,
    member: u64,
    /// Where the next poll starts (round-robin over owned partitions).
    next: usize,
}

impl Stream for PartitionedStream {
    type Item = Result<Delivery, TransportError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let me = self.member;
        let group = self.group.clone();
        let mut st = lock(&group.state);
        let Some(mi) = st.members.iter().position(|m| m.id == me) else {
            return Poll::Ready(None);
        };
        let prefetch = st.members[mi].prefetch;
        match &st.members[mi].waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.members[mi].waker = Some(cx.waker().clone()),
        }
        let p = st.owner.len();
        for k in 0..p {
            let i = (self.next + k) % p;
            if st.owner[i] != Some(me) {
                continue;
            }
            let qs = &group.queues[i];
            {
                let mut q = qs.lock();
                if q.closed {
                    return Poll::Ready(None);
                }
                if !q.consumers.iter().any(|c| c.id == me) {
                    if q.unacked.len() > 0 {
                        // The previous owner still holds deliveries of it.
                        q.handover = Some(cx.waker().clone());
                        continue;
                    }
                    q.consumers.push(Consumer {
                        id: me,
                        prefetch,
                        in_flight: 0,
                        waker: None,
                    });
                }
            }
            let mut one = None;
            if let Taken::Pending = take_from(qs, me, 1, |d| one = Some(d), Some(cx.waker())) {
                if let Some(d) = one {
                    self.next = i + 1;
                    return Poll::Ready(Some(Ok(d)));
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for PartitionedStream {
    fn drop(&mut self) {
        let me = self.member;
        let mut wakers = Vec::new();
        let mut activity = None;
        {
            let mut st = lock(&self.group.state);
            st.members.retain(|m| m.id != me);
            // Release this member's deliveries of every partition (also
            // those it lost but had not settled), in their original order.
            for qs in &self.group.queues {
                let mut q = qs.lock();
                q.consumers.retain(|c| c.id != me);
                let mut mine: Vec<Message> = q
                    .unacked
                    .tags_of(me)
                    .into_iter()
                    .filter_map(|t| q.unacked.remove(t).map(|(_, m)| m))
                    .collect();
                mine.sort_unstable_by_key(|m| m.seq);
                for m in mine {
                    q.requeue(m);
                }
                let w = q.wakers();
                wakers.extend(w.first);
                wakers.extend(w.rest);
                activity = activity.or(w.activity);
            }
            wakers.extend(self.group.rebalance(&mut st));
        }
        wakers.into_iter().for_each(Waker::wake);
        if let Some(a) = activity {
            a.changed.notify_waiters();
        }
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

    #[test]
    fn unacked_tags_are_reused_with_a_new_generation() {
        let msg = |seq| Message {
            seq,
            envelope: Arc::new(envelope("ev", None, seq)),
            redelivered: false,
        };
        let mut u = Unacked::default();
        let a = u.insert(1, msg(1));
        let b = u.insert(2, msg(2));
        assert_eq!(u.len(), 2);
        assert_eq!(u.remove(a).map(|(c, m)| (c, m.seq)), Some((1, 1)));
        assert!(u.remove(a).is_none(), "settled twice");
        let c = u.insert(1, msg(3));
        assert_ne!(c, a, "reused slot kept its tag");
        assert!(u.remove(a).is_none(), "stale tag settled the new delivery");
        assert_eq!(u.tags_of(1), vec![c]);
        assert_eq!(u.remove(b).map(|(c, m)| (c, m.seq)), Some((2, 2)));
        assert_eq!(u.remove(c).map(|(_, m)| m.seq), Some(3));
        assert_eq!(u.len(), 0);
    }

    #[tokio::test]
    async fn acked_messages_are_freed_by_publishers_within_bounds() {
        let t = MemoryTransport::new();
        let mut sub = t
            .subscribe(SubscriptionSpec::new("g-gc", ["ev.gc"]).prefetch(64))
            .await
            .unwrap();
        let mut batch = AckBatch::default();
        for n in 0..10 {
            t.publish(&envelope("ev.gc", None, n)).await.unwrap();
            let (_, _, acker) = expect_delivery(&mut sub, "gc").await.into_parts();
            assert!(acker.ack_in(&mut batch).is_none());
        }
        batch.settle();
        let q = t.shared.lock().queues["g-gc"].clone();
        assert_eq!(q.lock().garbage.messages.len(), 10);
        assert_eq!(t.queue_stats("g-gc").unwrap().unacked, 0);
        t.publish(&envelope("ev.gc", None, 10)).await.unwrap();
        assert_eq!(q.lock().garbage.messages.len(), 9, "publish freed one");
        // Past the bound the acking side frees them itself.
        for n in 0..Garbage::MAX_LEN as u64 {
            q.lock().garbage.keep(Message {
                seq: n,
                envelope: Arc::new(envelope("ev.gc", None, n)),
                redelivered: false,
            });
        }
        assert!(q.lock().garbage.messages.len() < Garbage::MAX_LEN);
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
