//! The in-process transport: queues per group in shared memory.
//!
//! It follows the same contract as the broker transports (see the
//! [module docs](super)): one queue per group bound to event names,
//! competing consumers within a group, fan-out across groups, prefetch,
//! ack/nack/requeue with redelivery, dead-letter queues. Nothing survives the
//! process; use it for tests and single-process applications.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};

use async_trait::async_trait;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::{
    dead_letter_name, Acker, Delivery, Publisher, Subscriber, Subscription, SubscriptionSpec,
    TransportError,
};
use crate::Envelope;

/// In-memory transport. Cheap to clone; clones share the same queues.
#[derive(Clone, Default)]
pub struct MemoryTransport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemoryTransport")
            .field("queues", &state.queues.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queues half-updated
        // in a way that loses messages, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    /// event name → queues bound to it
    routes: HashMap<String, Vec<String>>,
    next_consumer: u64,
    closed: bool,
}

struct Message {
    /// Position in the queue's arrival order; requeued messages go back to
    /// their original place (as in RabbitMQ), not to the tail.
    seq: u64,
    envelope: Arc<Envelope>,
    redelivered: bool,
}

#[derive(Default)]
struct Queue {
    /// The queue's own name (shared with its ackers).
    name: Arc<str>,
    ready: VecDeque<Message>,
    /// delivery tag → (consumer id, message)
    unacked: BTreeMap<u64, (u64, Message)>,
    consumers: Vec<Consumer>,
    round_robin: usize,
    next_tag: u64,
    next_seq: u64,
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
}

struct Consumer {
    id: u64,
    prefetch: usize,
    in_flight: usize,
    tx: mpsc::UnboundedSender<Delivery>,
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
    /// A new, empty transport.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts for queue `name` (a group, or a group's dead-letter queue).
    pub fn queue_stats(&self, name: &str) -> Option<QueueStats> {
        let state = self.shared.lock();
        state.queues.get(name).map(|q| QueueStats {
            ready: q.ready.len(),
            unacked: q.unacked.len(),
            consumers: q.consumers.len(),
        })
    }

    /// Closes the transport: subscriptions end, publishing fails.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        for q in state.queues.values_mut() {
            q.consumers.clear();
        }
    }

    fn consume(&self, queue: &str, prefetch: u16) -> Result<Subscription, TransportError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TransportError::Closed);
        }
        state.next_consumer += 1;
        let id = state.next_consumer;
        let q = state.queue(queue);
        q.consumers.push(Consumer {
            id,
            prefetch: usize::from(prefetch.max(1)),
            in_flight: 0,
            tx,
        });
        dispatch(&self.shared, q);
        drop(state);
        Ok(Subscription::new(MemoryStream {
            guard: ConsumerGuard {
                shared: self.shared.clone(),
                queue: queue.to_owned(),
                consumer: id,
            },
            rx,
        }))
    }
}

/// Hands ready messages to consumers with free prefetch credit, round-robin.
fn dispatch(shared: &Arc<Shared>, q: &mut Queue) {
    while !q.ready.is_empty() && !q.consumers.is_empty() {
        let n = q.consumers.len();
        let Some(idx) = (0..n)
            .map(|i| (q.round_robin + i) % n)
            .find(|&i| q.consumers[i].in_flight < q.consumers[i].prefetch)
        else {
            return;
        };
        q.round_robin = (idx + 1) % n;
        let Some(msg) = q.ready.pop_front() else {
            return;
        };
        q.next_tag += 1;
        let tag = q.next_tag;
        let consumer = &mut q.consumers[idx];
        let delivery = Delivery::new(
            msg.envelope.clone(),
            msg.redelivered,
            Box::new(MemoryAcker {
                shared: shared.clone(),
                queue: q.name.clone(),
                tag,
                settled: false,
            }),
        );
        if consumer.tx.send(delivery).is_err() {
            // The consumer's stream is gone; its guard will clean up. Put the
            // message back and stop using this consumer.
            q.ready.push_front(msg);
            // (push_front keeps seq order: it was the smallest ready seq.)
            let id = consumer.id;
            q.consumers.retain(|c| c.id != id);
            continue;
        }
        consumer.in_flight += 1;
        let id = consumer.id;
        q.unacked.insert(tag, (id, msg));
    }
}

impl State {
    /// The queue `name`, created empty if missing.
    fn queue(&mut self, name: &str) -> &mut Queue {
        self.queues
            .entry(name.to_owned())
            .or_insert_with(|| Queue {
                name: Arc::from(name),
                ..Queue::default()
            })
    }
}

/// Removes delivery `tag` from the unacked set, returning the message.
fn settle(state: &mut State, queue: &str, tag: u64) -> Result<Message, TransportError> {
    let q = state.queues.get_mut(queue).ok_or(TransportError::Settled)?;
    let (consumer, msg) = q.unacked.remove(&tag).ok_or(TransportError::Settled)?;
    if let Some(c) = q.consumers.iter_mut().find(|c| c.id == consumer) {
        c.in_flight = c.in_flight.saturating_sub(1);
    }
    Ok(msg)
}

#[async_trait]
impl Publisher for MemoryTransport {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.publish_shared(Arc::new(envelope.clone())).await
    }

    async fn publish_shared(&self, envelope: Arc<Envelope>) -> Result<(), TransportError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TransportError::Closed);
        }
        let state = &mut *state;
        if let Some(targets) = state.routes.get(&envelope.name) {
            for name in targets {
                if let Some(q) = state.queues.get_mut(name) {
                    q.push_new(envelope.clone());
                    dispatch(&self.shared, q);
                }
            }
        }
        Ok(())
    }

    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TransportError::Closed);
        }
        let state = &mut *state;
        for envelope in envelopes {
            let Some(targets) = state.routes.get(&envelope.name) else {
                continue; // no group subscribed: unroutable, like an AMQP exchange without bindings
            };
            // One copy shared by every group's queue.
            let shared = Arc::new(envelope.clone());
            for name in targets {
                if let Some(q) = state.queues.get_mut(name) {
                    q.push_new(shared.clone());
                    dispatch(&self.shared, q);
                }
            }
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
            state.queue(&spec.group);
            for event in &spec.events {
                let bound = state.routes.entry(event.clone()).or_default();
                if !bound.contains(&spec.group) {
                    bound.push(spec.group.clone());
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
    shared: Arc<Shared>,
    queue: Arc<str>,
    tag: u64,
    settled: bool,
}

impl MemoryAcker {
    fn finish(&mut self, outcome: Outcome) -> Result<(), TransportError> {
        self.settled = true;
        let mut state = self.shared.lock();
        let state = &mut *state;
        let msg = settle(state, &self.queue, self.tag)?;
        match outcome {
            Outcome::Ack | Outcome::Drop => {}
            Outcome::Requeue => {
                if let Some(q) = state.queues.get_mut(&*self.queue) {
                    q.requeue(msg);
                }
            }
            Outcome::DeadLetter(envelope) => {
                let dlq = state.queue(&dead_letter_name(&self.queue));
                dlq.push_new(Arc::new(envelope));
                dispatch(&self.shared, dlq);
            }
        }
        if let Some(q) = state.queues.get_mut(&*self.queue) {
            dispatch(&self.shared, q);
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

struct ConsumerGuard {
    shared: Arc<Shared>,
    queue: String,
    consumer: u64,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let Some(q) = state.queues.get_mut(&*self.queue) else {
            return;
        };
        q.consumers.retain(|c| c.id != self.consumer);
        // Unacked deliveries of this consumer go back to the front, in
        // their original order, flagged redelivered.
        let tags: Vec<u64> = q
            .unacked
            .iter()
            .filter(|(_, (c, _))| *c == self.consumer)
            .map(|(t, _)| *t)
            .collect();
        for t in tags {
            if let Some((_, m)) = q.unacked.remove(&t) {
                q.requeue(m);
            }
        }
        if q.round_robin >= q.consumers.len() {
            q.round_robin = 0;
        }
        dispatch(&self.shared, q);
    }
}

struct MemoryStream {
    // Dropped before `rx` (fields drop in order): the guard requeues every
    // unacked delivery of this consumer, including those still buffered in
    // `rx`, in their original order. Their ackers then find them settled.
    #[allow(dead_code)]
    guard: ConsumerGuard,
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl Stream for MemoryStream {
    type Item = Result<Delivery, TransportError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|o| o.map(Ok))
    }
}
