//! Queues: ready messages in original order (by priority, then sequence), consumers with
//! credit, and the queue arguments RabbitMQ supports.
//!
//! ### Invariants
//! - `ready` is ordered by `(255 - priority, id)`: requeued messages go back to their original
//!   position because their `id` is kept.
//! - `ready_bytes` is the sum of body sizes in `ready`.
//! - `unacked` counts messages delivered with manual ack and not yet settled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::types::{AMQPValue, FieldTable};
use tokio::sync::mpsc::UnboundedSender;

use super::message::{paged_stub, Message, QueuedMessage};
use crate::error::AmqpError;
use crate::protocol::method::{value_as_i64, value_as_str};
use crate::storage::MsgMeta;

/// Notifications from the model to a connection task.
#[derive(Debug)]
pub enum Notify {
    /// Deliver a message to a consumer.
    Deliver(Delivery),
    /// The server cancelled a consumer (its queue was deleted).
    Cancelled {
        /// Channel of the consumer.
        channel: u16,
        /// Consumer tag.
        consumer_tag: Arc<str>,
    },
    /// Close the connection (shutdown or admin action).
    Close {
        /// Reply code.
        code: u16,
        /// Reply text.
        text: String,
    },
}

/// One delivery to a consumer.
#[derive(Debug)]
pub struct Delivery {
    /// Channel of the consumer.
    pub channel: u16,
    /// Consumer tag.
    pub consumer_tag: Arc<str>,
    /// Queue the message comes from.
    pub queue: Arc<str>,
    /// The message.
    pub msg: QueuedMessage,
    /// No-ack consumer: settled on send.
    pub no_ack: bool,
    /// The consumer's credit, to release on ack (or after writing, for no-ack).
    pub credit: Arc<Credit>,
}

/// A prefetch window: `limit` 0 means unlimited; `active` false pauses delivery (channel.flow).
#[derive(Debug)]
pub struct Credit {
    /// Prefetch limit (0 = unlimited).
    pub limit: AtomicU32,
    /// Messages delivered and not yet settled.
    pub inflight: AtomicU32,
    /// Flow control: deliveries allowed.
    pub active: AtomicBool,
}

impl Credit {
    /// A window of `limit` (0 = unlimited).
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicU32::new(limit),
            inflight: AtomicU32::new(0),
            active: AtomicBool::new(true),
        })
    }
    /// Room for one more delivery?
    pub fn has_room(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.active.load(Ordering::Relaxed)
            && (limit == 0 || self.inflight.load(Ordering::Relaxed) < limit)
    }
    /// Release `n` in-flight slots.
    pub fn release(&self, n: u32) {
        let _ = self
            .inflight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
    /// Take one slot.
    pub fn take(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
    }
}

/// A consumer attached to a queue.
#[derive(Debug)]
pub struct Consumer {
    /// Consumer tag (unique per channel).
    pub tag: Arc<str>,
    /// Owning connection.
    pub conn_id: u64,
    /// Owning channel.
    pub channel: u16,
    /// Automatic acknowledgement mode.
    pub no_ack: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// `x-priority` argument.
    pub priority: i64,
    /// Per-consumer window (basic.qos global=false, or the no-ack pipeline bound).
    pub credit: Arc<Credit>,
    /// Channel-wide window (basic.qos global=true, and channel.flow).
    pub channel_credit: Arc<Credit>,
    /// Where deliveries go.
    pub tx: UnboundedSender<Notify>,
}

impl Consumer {
    fn can_take(&self) -> bool {
        if self.no_ack {
            self.credit.has_room() && self.channel_credit.active.load(Ordering::Relaxed)
        } else {
            self.credit.has_room() && self.channel_credit.has_room()
        }
    }
}

/// What to do when a length limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest message.
    #[default]
    DropHead,
    /// Refuse the new message (nack to confirm-mode publishers).
    RejectPublish,
    /// Refuse and dead-letter the new message.
    RejectPublishDlx,
}

/// Parsed queue arguments.
#[derive(Debug, Clone, Default)]
pub struct QueueArgs {
    /// `x-message-ttl` (ms).
    pub message_ttl: Option<u64>,
    /// `x-expires` (ms).
    pub expires: Option<u64>,
    /// `x-max-length`.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange`.
    pub dlx: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dlrk: Option<String>,
    /// `x-single-active-consumer`.
    pub single_active: bool,
    /// `x-max-priority` (capped at 255).
    pub max_priority: Option<u8>,
}

impl QueueArgs {
    /// Parse and validate arguments as RabbitMQ does (406 on invalid values).
    ///
    /// # Errors
    /// 406 PRECONDITION_FAILED naming the argument.
    pub fn parse(t: &FieldTable, queue: &str, vhost: &str) -> Result<Self, AmqpError> {
        let bad = |k: &str, v: &AMQPValue| {
            AmqpError::precondition(format!(
                "invalid arg '{k}' for queue '{queue}' in vhost '{vhost}': {}",
                crate::protocol::method::value_display(v)
            ))
        };
        let mut a = QueueArgs::default();
        for (k, v) in t {
            let k = k.as_str();
            let nonneg = |min: i64| match value_as_i64(v) {
                Some(n) if n >= min => Ok(n as u64),
                _ => Err(bad(k, v)),
            };
            match k {
                "x-message-ttl" => a.message_ttl = Some(nonneg(0)?),
                "x-expires" => a.expires = Some(nonneg(1)?),
                "x-max-length" => a.max_length = Some(nonneg(0)?),
                "x-max-length-bytes" => a.max_length_bytes = Some(nonneg(0)?),
                "x-max-priority" => {
                    // RabbitMQ's details: {value_negative,-1} / {max_value_exceeded,256}
                    let detail = |d: String| {
                        AmqpError::precondition(format!(
                            "invalid arg '{k}' for queue '{queue}' in vhost '{vhost}': {d}"
                        ))
                    };
                    a.max_priority = Some(match value_as_i64(v) {
                        Some(n) if n < 0 => return Err(detail(format!("{{value_negative,{n}}}"))),
                        Some(n) if n > 255 => {
                            return Err(detail(format!("{{max_value_exceeded,{n}}}")))
                        }
                        Some(n) => n as u8,
                        None => return Err(bad(k, v)),
                    });
                }
                "x-overflow" => {
                    a.overflow = match value_as_str(v).as_deref() {
                        Some("drop-head") => Overflow::DropHead,
                        Some("reject-publish") => Overflow::RejectPublish,
                        Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                        _ => return Err(bad(k, v)),
                    }
                }
                "x-dead-letter-exchange" => a.dlx = Some(value_as_str(v).ok_or_else(|| bad(k, v))?),
                "x-dead-letter-routing-key" => {
                    a.dlrk = Some(value_as_str(v).ok_or_else(|| bad(k, v))?)
                }
                "x-single-active-consumer" => {
                    a.single_active = match v {
                        AMQPValue::Boolean(b) => *b,
                        _ => return Err(bad(k, v)),
                    }
                }
                "x-queue-type" => match value_as_str(v).as_deref() {
                    Some("classic") => {}
                    _ => return Err(bad(k, v)),
                },
                _ => {}
            }
        }
        if a.dlrk.is_some() && a.dlx.is_none() {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'x-dead-letter-routing-key' for queue '{queue}' in vhost '{vhost}': \
                 Key x-dead-letter-exchange should also be set"
            )));
        }
        Ok(a)
    }
}

/// Result of offering a message to a queue.
#[derive(Debug)]
pub enum Enqueued {
    /// Accepted with this id; `dropped` are heads removed by `drop-head` overflow.
    Accepted {
        /// Sequence id given to the message.
        id: u64,
        /// Effective priority given to the message.
        priority: u8,
        /// Messages dropped from the head to make room.
        dropped: Vec<QueuedMessage>,
    },
    /// Refused by `reject-publish` overflow.
    Rejected,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Name.
    pub name: Arc<str>,
    /// Survives restart.
    pub durable: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Owning connection of an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Arguments as declared (for equivalence checks and persistence).
    pub arguments: FieldTable,
    /// Parsed arguments.
    pub args: QueueArgs,
    ready: BTreeMap<(u8, u64), QueuedMessage>,
    ready_bytes: usize,
    next_id: u64,
    /// Attached consumers, in attach order.
    pub consumers: Vec<Consumer>,
    rr: usize,
    /// Delivered, unsettled (manual ack) messages.
    pub unacked: usize,
    /// Has ever had a consumer (auto-delete only triggers after one).
    pub had_consumers: bool,
    /// Last use (for `x-expires`).
    pub last_used: Instant,
    /// Message counters (management API, metrics).
    pub stats: super::stats::QueueCounters,
}

impl Queue {
    /// New empty queue.
    pub fn new(
        name: &str,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: Option<u64>,
        arguments: FieldTable,
        args: QueueArgs,
    ) -> Self {
        Self {
            name: name.into(),
            durable,
            auto_delete,
            exclusive_owner,
            arguments,
            args,
            ready: BTreeMap::new(),
            ready_bytes: 0,
            next_id: 1,
            consumers: Vec::new(),
            rr: 0,
            unacked: 0,
            had_consumers: false,
            last_used: Instant::now(),
            stats: Default::default(),
        }
    }

    /// Bytes of ready message bodies.
    pub fn ready_bytes(&self) -> usize {
        self.ready_bytes
    }

    /// Ready messages in delivery order (for peeking; paged-out ones are stubs).
    pub fn ready_iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.ready.values()
    }

    /// Ready message count.
    pub fn len(&self) -> usize {
        self.ready.len()
    }

    /// No ready messages?
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    fn insert(&mut self, qm: QueuedMessage) {
        self.ready_bytes += qm.size();
        self.ready.insert((255 - qm.priority, qm.id), qm);
    }

    fn over_limit(&self, extra_msgs: usize, extra_bytes: usize) -> bool {
        self.args
            .max_length
            .is_some_and(|m| (self.ready.len() + extra_msgs) as u64 > m)
            || self
                .args
                .max_length_bytes
                .is_some_and(|m| (self.ready_bytes + extra_bytes) as u64 > m)
    }

    /// When a message recovered from the store expires in this queue: its TTL (the smaller of
    /// the queue's `x-message-ttl` and the message's own, as at publish) counted from when it
    /// was enqueued, not from the restart. `now` and `now_ms` are the same moment, as an
    /// [`Instant`] and in ms since the Unix epoch. A message stored without an enqueue time
    /// (written by store format version 1) counts as enqueued at `now_ms`. A deadline already
    /// past yields an instant before `now`: the message expires at the next dispatch or sweep.
    pub fn recovered_expiry(&self, meta: MsgMeta, now: Instant, now_ms: u64) -> Option<Instant> {
        let ttl = match (self.args.message_ttl, meta.ttl_ms) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        let start = if meta.enqueued_at_ms == 0 {
            now_ms
        } else {
            meta.enqueued_at_ms
        };
        let at = start.saturating_add(ttl);
        Some(if at >= now_ms {
            now + Duration::from_millis(at - now_ms)
        } else {
            let late = Duration::from_millis(now_ms - at);
            now.checked_sub(late)
                .or_else(|| now.checked_sub(Duration::from_millis(1)))
                .unwrap_or(now)
        })
    }

    /// Put back a message recovered from the store at start-up, under its
    /// stored id (flagged redelivered: it may have been delivered before the
    /// restart), expiring at `expires_at` (see [`recovered_expiry`](Self::recovered_expiry)).
    /// Later ids continue after it.
    pub fn restore(&mut self, id: u64, msg: Arc<Message>, expires_at: Option<Instant>) {
        let priority = match self.args.max_priority {
            Some(max) => msg.properties.priority().unwrap_or(0).min(max),
            None => 0,
        };
        self.next_id = self.next_id.max(id + 1);
        self.insert(QueuedMessage {
            id,
            msg,
            redelivered: true,
            expires_at,
            priority,
            paged: None,
        });
    }

    /// Like [`restore`](Self::restore) for a message whose body stays in the store (lazy
    /// recovery): only its id, size and expiry are kept; priority 0.
    pub fn restore_paged(&mut self, id: u64, size: u32, expires_at: Option<Instant>) {
        self.next_id = self.next_id.max(id + 1);
        self.insert(QueuedMessage {
            id,
            msg: paged_stub(),
            redelivered: true,
            expires_at,
            priority: 0,
            paged: Some(size),
        });
    }

    /// Drop the in-memory body of ready message `id` (priority `priority`): it has been
    /// appended to the store and is read back before delivery.
    pub fn page_out(&mut self, id: u64, priority: u8) {
        if let Some(qm) = self.ready.get_mut(&(255 - priority, id)) {
            if qm.paged.is_none() {
                qm.paged = Some(u32::try_from(qm.msg.size()).unwrap_or(u32::MAX));
                qm.msg = paged_stub();
            }
        }
    }

    /// Offer a newly published message.
    pub fn enqueue(&mut self, msg: Arc<Message>, now: Instant) -> Enqueued {
        if self.args.overflow != Overflow::DropHead && self.over_limit(1, msg.size()) {
            return Enqueued::Rejected;
        }
        let ttl = match (self.args.message_ttl, msg.expiration_ms().ok().flatten()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let priority = match self.args.max_priority {
            Some(max) => msg.properties.priority().unwrap_or(0).min(max),
            None => 0,
        };
        let id = self.next_id;
        self.next_id += 1;
        self.insert(QueuedMessage {
            id,
            msg,
            redelivered: false,
            expires_at: ttl.map(|t| now + Duration::from_millis(t)),
            priority,
            paged: None,
        });
        super::stats::bump(&self.stats.publish, 1);
        let mut dropped = Vec::new();
        while self.over_limit(0, 0) {
            match self.ready.pop_first() {
                Some((_, qm)) => {
                    self.ready_bytes -= qm.size();
                    dropped.push(qm);
                }
                None => break,
            }
        }
        Enqueued::Accepted {
            id,
            priority,
            dropped,
        }
    }

    /// Put back a delivered message at its original position, flagged redelivered.
    pub fn requeue(&mut self, mut qm: QueuedMessage) {
        qm.redelivered = true;
        self.insert(qm);
    }

    /// Put a message taken with [`pop`](Self::pop) back unchanged (not flagged
    /// redelivered: it was not delivered).
    pub fn put_back(&mut self, qm: QueuedMessage) {
        self.insert(qm);
    }

    /// Take the next ready message (for basic.get).
    pub fn pop(&mut self) -> Option<QueuedMessage> {
        let (_, qm) = self.ready.pop_first()?;
        self.ready_bytes -= qm.size();
        Some(qm)
    }

    /// Remove expired messages from the head.
    pub fn take_expired(&mut self, now: Instant) -> Vec<QueuedMessage> {
        let mut out = Vec::new();
        while let Some(e) = self.ready.first_entry() {
            if e.get().expires_at.is_some_and(|t| t < now) {
                let qm = e.remove();
                self.ready_bytes -= qm.size();
                out.push(qm);
            } else {
                break;
            }
        }
        out
    }

    /// Does any ready message carry an expiry (so the sweeper must look)?
    pub fn head_expires(&self) -> bool {
        self.ready
            .first_key_value()
            .is_some_and(|(_, qm)| qm.expires_at.is_some())
    }

    /// Drop all ready messages; returns them.
    pub fn purge(&mut self) -> Vec<QueuedMessage> {
        self.ready_bytes = 0;
        std::mem::take(&mut self.ready).into_values().collect()
    }

    /// Index of the consumer that should get the next message, if any can take one.
    fn select_consumer(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        if n == 0 {
            return None;
        }
        if self.args.single_active {
            return self.consumers[0].can_take().then_some(0);
        }
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (self.rr + k) % n;
            let c = &self.consumers[i];
            if c.can_take() && best.is_none_or(|b| c.priority > self.consumers[b].priority) {
                best = Some(i);
            }
        }
        if let Some(i) = best {
            self.rr = (i + 1) % n;
        }
        best
    }

    /// Deliver ready messages to consumers with credit. Expired heads are returned for
    /// dead-lettering (or dropping) by the caller.
    pub fn dispatch(&mut self, now: Instant, expired: &mut Vec<QueuedMessage>) {
        loop {
            expired.extend(self.take_expired(now));
            if self.ready.is_empty() {
                return;
            }
            let Some(ci) = self.select_consumer() else {
                return;
            };
            let Some(qm) = self.pop() else { return };
            let c = &self.consumers[ci];
            c.credit.take();
            if !c.no_ack {
                c.channel_credit.take();
            }
            let delivery = Delivery {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
                queue: self.name.clone(),
                msg: qm,
                no_ack: c.no_ack,
                credit: c.credit.clone(),
            };
            let no_ack = c.no_ack;
            let redelivered = delivery.msg.redelivered;
            match c.tx.send(Notify::Deliver(delivery)) {
                Ok(()) => {
                    let st = &self.stats;
                    super::stats::bump(
                        if no_ack {
                            &st.deliver_no_ack
                        } else {
                            &st.deliver
                        },
                        1,
                    );
                    if redelivered {
                        super::stats::bump(&st.redeliver, 1);
                    }
                    if !no_ack {
                        self.unacked += 1;
                    }
                    self.last_used = now;
                }
                Err(e) => {
                    // connection is gone: put the message back, drop the consumer
                    if let Notify::Deliver(d) = e.0 {
                        self.insert(d.msg);
                    }
                    self.consumers.remove(ci);
                }
            }
        }
    }
}
