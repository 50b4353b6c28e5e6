//! Channels: turn decoded methods into model operations, assemble content
//! (method → header → body), track deliveries, prefetch, confirms and transactions.
//!
//! ### Invariants
//! - Delivery tags on a channel start at 1 and increase by one per delivery/get-ok.
//! - Every entry in `unacked` is counted in its queue's `unacked` until settled.
//! - When a channel ends (close, error or connection loss) its unacked messages are requeued
//!   and its consumers detached.

mod dispatch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::mpsc::UnboundedSender;

use crate::auth::{Access, Permission};
use crate::connection::outbox::Outbox;
use crate::error::AmqpError;
use crate::model::{Core, Credit, Notify, QueuedMessage};
use crate::protocol::frame::ContentHeader;

/// Channel lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Normal operation.
    Open,
    /// We sent `channel.close`; everything but close/close-ok is dropped.
    Closing,
}

/// What the connection lends a channel while it handles one frame or notification.
#[derive(Debug)]
pub struct Session<'a> {
    /// Broker core.
    pub core: &'a Core,
    /// Connection id.
    pub conn_id: u64,
    /// Vhost of the connection.
    pub vhost: &'a str,
    /// Authenticated user.
    pub user: &'a str,
    /// The user's permission on the vhost.
    pub perm: Option<&'a Permission>,
    /// Outgoing frames.
    pub out: &'a mut Outbox,
    /// The connection's notification sender (given to consumers).
    pub notify: &'a UnboundedSender<Notify>,
    /// Maximum accepted body size.
    pub max_message_size: u64,
    /// Queues to dispatch once the current batch is done.
    pub kick: &'a mut HashSet<Arc<str>>,
    /// Client wants `basic.cancel` when the server cancels a consumer.
    pub cancel_notify: bool,
    /// Replies that wait for the message store to sync: publisher confirms (durable stores)
    /// and `tx.commit-ok`.
    pub deferred: &'a mut Vec<(u16, amq_protocol::protocol::AMQPClass)>,
}

impl Session<'_> {
    /// Enforce a permission as RabbitMQ does (the default exchange is `amq.default`).
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED.
    pub fn check(&self, access: Access, kind: &str, name: &str) -> Result<(), AmqpError> {
        let res = if name.is_empty() && kind == "exchange" {
            "amq.default"
        } else {
            name
        };
        if self.perm.is_some_and(|p| p.allows(access, res)) {
            Ok(())
        } else {
            Err(AmqpError::access_refused(format!(
                "{} access to {kind} '{res}' in vhost '{}' refused for user '{}'",
                access.name(),
                self.vhost,
                self.user
            )))
        }
    }
}

#[derive(Debug)]
struct Pending {
    exchange: String,
    routing_key: String,
    mandatory: bool,
    header: Option<ContentHeader>,
    body: BytesMut,
}

#[derive(Debug)]
struct Unacked {
    queue: Arc<str>,
    msg: QueuedMessage,
    /// Consumer window to release on settle (None for basic.get).
    credit: Option<Arc<Credit>>,
}

#[derive(Debug)]
struct ConsumerInfo {
    queue: Arc<str>,
}

#[derive(Debug, Clone, Copy)]
enum SettleKind {
    Ack,
    Requeue,
    Discard,
}

#[derive(Debug)]
enum TxOp {
    Publish(Box<(String, Arc<crate::model::Message>, bool)>),
    Settle(u64, bool, SettleKind),
}

/// One AMQP channel.
#[derive(Debug)]
pub struct Channel {
    /// Channel number.
    pub id: u16,
    /// Lifecycle state.
    pub state: ChannelState,
    pending: Option<Pending>,
    next_tag: u64,
    unacked: BTreeMap<u64, Unacked>,
    consumers: HashMap<String, ConsumerInfo>,
    prefetch: u32,
    global: Arc<Credit>,
    confirm: bool,
    publish_seq: u64,
    tx: Option<Vec<TxOp>>,
    /// The hidden queue behind direct reply-to (`amq.rabbitmq.reply-to`), once consumed.
    reply_queue: Option<String>,
    /// The queue most recently declared on this channel: an empty queue name
    /// in bind, unbind, consume, get, purge and delete stands for it (AMQP
    /// 0-9-1 §1.7.2.1, as RabbitMQ does).
    last_queue: Option<String>,
    /// What the management API shows about this channel.
    pub info: Arc<crate::model::stats::ChannelInfo>,
}

/// The pseudo-queue of RabbitMQ's direct reply-to.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Pipeline bound for no-ack consumers (messages encoded but not yet flushed).
const NOACK_WINDOW: u32 = 1000;

impl Channel {
    /// A freshly opened channel.
    pub fn new(id: u16) -> Self {
        Self {
            id,
            state: ChannelState::Open,
            pending: None,
            next_tag: 1,
            unacked: BTreeMap::new(),
            consumers: HashMap::new(),
            prefetch: 0,
            global: Credit::new(0),
            confirm: false,
            publish_seq: 0,
            tx: None,
            reply_queue: None,
            last_queue: None,
            info: Arc::default(),
        }
    }

    /// Copy the channel's settings and counts into [`Channel::info`] (cheap atomic stores).
    pub fn publish_info(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let i = &self.info;
        i.prefetch.store(self.prefetch, Relaxed);
        i.global_prefetch
            .store(self.global.limit.load(Relaxed), Relaxed);
        i.confirm.store(self.confirm, Relaxed);
        i.transactional.store(self.tx.is_some(), Relaxed);
        i.unacked.store(
            u32::try_from(self.unacked.len()).unwrap_or(u32::MAX),
            Relaxed,
        );
        i.consumers.store(
            u32::try_from(self.consumers.len()).unwrap_or(u32::MAX),
            Relaxed,
        );
    }

    /// Is the channel in the middle of receiving content?
    pub fn awaiting_content(&self) -> bool {
        self.pending.is_some()
    }

    /// A delivery from a queue arrived for a consumer on this channel.
    pub fn deliver(&mut self, s: &mut Session<'_>, d: crate::model::Delivery) {
        if self.state != ChannelState::Open || !self.consumers.contains_key(&*d.consumer_tag) {
            // consumer gone meanwhile: put the message back
            d.credit.release(1);
            if !d.no_ack {
                self.global.release(1);
            }
            let q = d.queue.to_string();
            let was_redelivered = d.msg.redelivered;
            let no_ack = d.no_ack;
            s.core.with_vhost(s.vhost, |vh, ctx| {
                if let Some(queue) = vh.queues.get_mut(&q) {
                    if !no_ack {
                        queue.unacked = queue.unacked.saturating_sub(1);
                    }
                    let mut m = d.msg;
                    m.redelivered = was_redelivered;
                    queue.requeue(m);
                    vh.dispatch(&q, ctx);
                }
            });
            return;
        }
        // a body paged out to the store is read back now, outside the state lock
        let Some(full) = s.core.page_in(s.vhost, &d.queue, &d.msg) else {
            d.credit.release(1);
            if !d.no_ack {
                self.global.release(1);
            }
            let q = d.queue.to_string();
            let no_ack = d.no_ack;
            s.core.with_vhost(s.vhost, |vh, ctx| {
                if !no_ack {
                    vh.settle(&q, vec![d.msg], false, false, ctx);
                }
                vh.dispatch(&q, ctx);
            });
            return;
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        s.out
            .deliver(self.id, &d.consumer_tag, tag, d.msg.redelivered, &full);
        drop(full);
        if d.no_ack {
            if d.msg.msg.persistent() {
                // settled on send: the store must not bring it back after a restart
                // (a no-op for messages it does not hold)
                let key = crate::storage::QueueKey {
                    vhost: s.vhost.to_owned(),
                    queue: d.queue.to_string(),
                };
                let _ = s.core.store.ack(&key, d.msg.id);
            }
            d.credit.release(1);
            s.kick.insert(d.queue.clone());
        } else {
            self.unacked.insert(
                tag,
                Unacked {
                    queue: d.queue,
                    msg: d.msg,
                    credit: Some(d.credit),
                },
            );
        }
    }

    /// The server cancelled one of our consumers (queue deleted).
    pub fn server_cancelled(&mut self, s: &mut Session<'_>, tag: &str) {
        if self.consumers.remove(tag).is_some()
            && self.state == ChannelState::Open
            && s.cancel_notify
        {
            s.out.method(
                self.id,
                amq_protocol::protocol::AMQPClass::Basic(
                    amq_protocol::protocol::basic::AMQPMethod::Cancel(
                        amq_protocol::protocol::basic::Cancel {
                            consumer_tag: tag.into(),
                            nowait: true,
                        },
                    ),
                ),
            );
        }
    }

    /// Release everything the channel holds: detach consumers, requeue unacked messages
    /// (in original order), drop pending content and transactions.
    pub fn cleanup(&mut self, s: &mut Session<'_>) {
        let mut consumers = Vec::new();
        let mut requeue = Vec::new();
        self.release(&mut consumers, &mut requeue);
        if consumers.is_empty() && requeue.is_empty() {
            return;
        }
        let conn = s.conn_id;
        s.core.with_vhost(s.vhost, |vh, ctx| {
            vh.release(conn, &consumers, requeue, ctx)
        });
    }

    /// Give up everything the channel holds: its consumers (queue, channel, tag) and its
    /// unacked messages (queue, message, counted in the queue's `unacked`) are appended for
    /// the caller to release in the vhost ([`crate::model::vhost::VHost::release`]); pending
    /// content and transactions are dropped.
    pub fn release(
        &mut self,
        consumers: &mut Vec<(Arc<str>, u16, Arc<str>)>,
        requeue: &mut Vec<(Arc<str>, QueuedMessage, bool)>,
    ) {
        self.pending = None;
        self.tx = None;
        for (tag, c) in self.consumers.drain() {
            consumers.push((c.queue, self.id, tag.into()));
        }
        for (_, u) in std::mem::take(&mut self.unacked) {
            if let Some(c) = &u.credit {
                c.release(1);
            }
            requeue.push((u.queue, u.msg, true));
        }
    }
}
