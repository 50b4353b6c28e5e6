//! Method dispatch for an open channel: one arm per AMQP method, each turned into a model call.

use std::collections::HashMap;
use std::sync::Arc;

use amq_protocol::protocol::{basic, channel, confirm, exchange, queue, tx, AMQPClass};
use bytes::{Bytes, BytesMut};

use super::{
    Channel, ChannelState, ConsumerInfo, Pending, Session, SettleKind, TxOp, Unacked, NOACK_WINDOW,
    REPLY_TO,
};
use crate::auth::Access;
use crate::error::AmqpError;
use crate::model::vhost::random_suffix;
use crate::model::{Consumer, Credit, Dest, Message};
use crate::protocol::constants::ReplyCode;
use crate::protocol::frame::ContentHeader;
use crate::protocol::method::{value_as_i64, value_as_str};

fn vhost_gone(s: &Session<'_>) -> AmqpError {
    AmqpError::new(
        ReplyCode::ConnectionForced,
        format!("vhost '{}' is deleted", s.vhost),
    )
}

/// Whether a binding method adds or removes the binding.
#[derive(Clone, Copy)]
enum Binding {
    Add,
    Remove,
}

/// exchange.bind/unbind and queue.bind/unbind: write permission on the
/// destination and read permission on the source exchange (as RabbitMQ
/// checks them), then the model call.
fn change_binding(
    s: &mut Session<'_>,
    op: Binding,
    source: &str,
    dest: Dest,
    key: &str,
    args: amq_protocol::types::FieldTable,
) -> Result<(), AmqpError> {
    let (kind, name) = match &dest {
        Dest::Exchange(n) => ("exchange", n.as_str()),
        Dest::Queue(n) => ("queue", n.as_str()),
    };
    s.check(Access::Write, kind, name)?;
    s.check(Access::Read, "exchange", source)?;
    let conn = s.conn_id;
    s.core
        .with_vhost(s.vhost, |vh, _| match op {
            Binding::Add => vh.bind(source, dest, key, args, conn),
            Binding::Remove => vh.unbind(source, dest, key, &args, conn),
        })
        .ok_or_else(|| vhost_gone(s))?
}

impl Channel {
    /// Handle a method on this (open) channel.
    ///
    /// # Errors
    /// An AMQP exception; its code decides channel or connection scope.
    pub fn handle_method(&mut self, s: &mut Session<'_>, m: AMQPClass) -> Result<(), AmqpError> {
        let id = self.id;
        match m {
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                self.global
                    .active
                    .store(f.active, std::sync::atomic::Ordering::Relaxed);
                s.out.method(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: f.active,
                    })),
                );
                if f.active {
                    self.kick_consumers(s);
                }
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Access(amq_protocol::protocol::access::AMQPMethod::Request(_)) => {
                s.out.method(
                    id,
                    AMQPClass::Access(amq_protocol::protocol::access::AMQPMethod::RequestOk(
                        amq_protocol::protocol::access::RequestOk {},
                    )),
                );
                Ok(())
            }
            AMQPClass::Exchange(m) => self.exchange_method(s, m),
            AMQPClass::Queue(m) => self.queue_method(s, m),
            AMQPClass::Basic(m) => self.basic_method(s, m),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(sel)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                self.confirm = true;
                if !sel.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.tx_method(s, m),
            other => Err(AmqpError::new(
                ReplyCode::CommandInvalid,
                format!(
                    "unexpected method {}/{} on channel {id}",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                ),
            )),
        }
    }

    /// `given`, or the queue most recently declared on this channel when
    /// `given` is empty (404 when none was).
    fn queue_name(&self, given: &str) -> Result<String, AmqpError> {
        if !given.is_empty() {
            return Ok(given.to_owned());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::new(ReplyCode::NotFound, "no previously declared queue"))
    }

    fn kick_consumers(&self, s: &mut Session<'_>) {
        for c in self.consumers.values() {
            s.kick.insert(Arc::clone(&c.queue));
        }
    }

    // ===== exchange =====

    fn exchange_method(
        &mut self,
        s: &mut Session<'_>,
        m: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let id = self.id;
        match m {
            exchange::AMQPMethod::Declare(d) => {
                let name = d.exchange.as_str();
                if !d.passive {
                    s.check(Access::Configure, "exchange", name)?;
                    if let Some(ae) = d
                        .arguments
                        .inner()
                        .get("alternate-exchange")
                        .and_then(value_as_str)
                    {
                        s.check(Access::Write, "exchange", &ae)?;
                        s.check(Access::Read, "exchange", name)?;
                    }
                }
                s.core
                    .with_vhost(s.vhost, |vh, _| {
                        vh.declare_exchange(
                            name,
                            d.kind.as_str(),
                            d.passive,
                            d.durable,
                            d.auto_delete,
                            d.internal,
                            d.arguments,
                        )
                    })
                    .ok_or_else(|| vhost_gone(s))??;
                if !d.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(
                            exchange::DeclareOk {},
                        )),
                    );
                }
            }
            exchange::AMQPMethod::Delete(d) => {
                let name = d.exchange.as_str();
                s.check(Access::Configure, "exchange", name)?;
                s.core
                    .with_vhost(s.vhost, |vh, _| vh.delete_exchange(name, d.if_unused))
                    .ok_or_else(|| vhost_gone(s))??;
                if !d.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
            }
            exchange::AMQPMethod::Bind(b) => {
                let dest = Dest::Exchange(b.destination.to_string());
                change_binding(
                    s,
                    Binding::Add,
                    b.source.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    b.arguments,
                )?;
                if !b.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                    );
                }
            }
            exchange::AMQPMethod::Unbind(b) => {
                let dest = Dest::Exchange(b.destination.to_string());
                change_binding(
                    s,
                    Binding::Remove,
                    b.source.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    b.arguments,
                )?;
                if !b.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                    );
                }
            }
            _ => {
                return Err(AmqpError::new(
                    ReplyCode::CommandInvalid,
                    "unexpected exchange method",
                ))
            }
        }
        Ok(())
    }

    // ===== queue =====

    fn queue_method(&mut self, s: &mut Session<'_>, m: queue::AMQPMethod) -> Result<(), AmqpError> {
        let id = self.id;
        let conn = s.conn_id;
        match m {
            queue::AMQPMethod::Declare(d) if d.passive && d.queue.as_str() == REPLY_TO => {
                if !d.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: d.queue,
                            message_count: 0,
                            consumer_count: 0,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Declare(d) => {
                let requested = d.queue.as_str();
                let name = if requested.is_empty() && !d.passive {
                    format!("amq.gen-{}", random_suffix())
                } else {
                    requested.to_owned()
                };
                if !d.passive {
                    s.check(Access::Configure, "queue", &name)?;
                    if let Some(dlx) = d
                        .arguments
                        .inner()
                        .get("x-dead-letter-exchange")
                        .and_then(value_as_str)
                    {
                        s.check(Access::Write, "exchange", &dlx)?;
                        s.check(Access::Read, "queue", &name)?;
                    }
                }
                let server_named = requested.is_empty();
                let info = s
                    .core
                    .with_vhost(s.vhost, |vh, ctx| {
                        vh.declare_queue(
                            &name,
                            server_named,
                            d.passive,
                            d.durable,
                            d.exclusive,
                            d.auto_delete,
                            d.arguments,
                            conn,
                            ctx.now,
                        )
                    })
                    .ok_or_else(|| vhost_gone(s))??;
                self.last_queue = Some(info.name.to_string());
                if !d.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: info.name.as_str().into(),
                            message_count: info.messages,
                            consumer_count: info.consumers,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Bind(b) => {
                let queue = self.queue_name(b.queue.as_str())?;
                // Both empty: the routing key is the queue's name (§1.7.2.3).
                let key = if b.queue.as_str().is_empty() && b.routing_key.as_str().is_empty() {
                    queue.clone()
                } else {
                    b.routing_key.to_string()
                };
                change_binding(
                    s,
                    Binding::Add,
                    b.exchange.as_str(),
                    Dest::Queue(queue),
                    &key,
                    b.arguments,
                )?;
                if !b.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                    );
                }
            }
            queue::AMQPMethod::Unbind(b) => {
                let queue = self.queue_name(b.queue.as_str())?;
                let key = if b.queue.as_str().is_empty() && b.routing_key.as_str().is_empty() {
                    queue.clone()
                } else {
                    b.routing_key.to_string()
                };
                change_binding(
                    s,
                    Binding::Remove,
                    b.exchange.as_str(),
                    Dest::Queue(queue),
                    &key,
                    b.arguments,
                )?;
                s.out.method(
                    id,
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                );
            }
            queue::AMQPMethod::Purge(p) => {
                let queue = self.queue_name(p.queue.as_str())?;
                s.check(Access::Read, "queue", &queue)?;
                let n = s
                    .core
                    .with_vhost(s.vhost, |vh, ctx| vh.purge_queue(&queue, conn, ctx))
                    .ok_or_else(|| vhost_gone(s))??;
                if !p.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                            message_count: n,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Delete(d) => {
                let queue = self.queue_name(d.queue.as_str())?;
                s.check(Access::Configure, "queue", &queue)?;
                let n = s
                    .core
                    .with_vhost(s.vhost, |vh, ctx| {
                        vh.delete_queue(&queue, d.if_unused, d.if_empty, conn, ctx)
                    })
                    .ok_or_else(|| vhost_gone(s))??;
                if !d.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                            message_count: n,
                        })),
                    );
                }
            }
            _ => {
                return Err(AmqpError::new(
                    ReplyCode::CommandInvalid,
                    "unexpected queue method",
                ))
            }
        }
        Ok(())
    }

    // ===== basic =====

    fn basic_method(&mut self, s: &mut Session<'_>, m: basic::AMQPMethod) -> Result<(), AmqpError> {
        let id = self.id;
        let conn = s.conn_id;
        match m {
            basic::AMQPMethod::Qos(q) => {
                if q.global {
                    self.global.limit.store(
                        q.prefetch_count as u32,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                } else {
                    self.prefetch = q.prefetch_count as u32;
                }
                s.out.method(
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
                self.kick_consumers(s);
            }
            basic::AMQPMethod::Consume(mut c) => {
                if c.queue.as_str() == REPLY_TO {
                    // direct reply-to: a hidden exclusive auto-delete queue stands in for it
                    if !c.no_ack {
                        return Err(AmqpError::precondition("reply consumer cannot acknowledge"));
                    }
                    if self.reply_queue.is_some() {
                        return Err(AmqpError::precondition("reply consumer already set"));
                    }
                    let name = format!("{REPLY_TO}.{}", random_suffix());
                    s.core
                        .with_vhost(s.vhost, |vh, ctx| {
                            vh.declare_queue(
                                &name,
                                true,
                                false,
                                false,
                                true,
                                true,
                                Default::default(),
                                conn,
                                ctx.now,
                            )
                        })
                        .ok_or_else(|| vhost_gone(s))??;
                    self.reply_queue = Some(name.clone());
                    c.queue = name.into();
                } else {
                    c.queue = self.queue_name(c.queue.as_str())?.into();
                    s.check(Access::Read, "queue", c.queue.as_str())?;
                }
                let tag = if c.consumer_tag.as_str().is_empty() {
                    format!("amq.ctag-{}", random_suffix())
                } else {
                    c.consumer_tag.to_string()
                };
                if self.consumers.contains_key(&tag) {
                    return Err(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!("attempt to reuse consumer tag '{tag}'"),
                    ));
                }
                let priority = c
                    .arguments
                    .inner()
                    .get("x-priority")
                    .and_then(value_as_i64)
                    .unwrap_or(0);
                let limit = if c.no_ack {
                    NOACK_WINDOW
                } else {
                    self.prefetch
                };
                let consumer = Consumer {
                    tag: tag.as_str().into(),
                    conn_id: conn,
                    channel: id,
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    priority,
                    credit: Credit::new(limit),
                    channel_credit: self.global.clone(),
                    tx: s.notify.clone(),
                };
                // consume-ok must precede the first delivery: deliveries travel through the
                // notification queue, which is drained after this reply is buffered
                let qname = c.queue.to_string();
                let qname2 = qname.clone();
                s.core
                    .with_vhost(s.vhost, |vh, ctx| vh.consume(&qname2, consumer, ctx))
                    .ok_or_else(|| vhost_gone(s))??;
                self.consumers.insert(
                    tag.clone(),
                    ConsumerInfo {
                        queue: qname.into(),
                    },
                );
                if !c.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                            consumer_tag: tag.as_str().into(),
                        })),
                    );
                }
            }
            basic::AMQPMethod::Cancel(c) => {
                let tag = c.consumer_tag.to_string();
                if let Some(info) = self.consumers.remove(&tag) {
                    s.core.with_vhost(s.vhost, |vh, ctx| {
                        vh.cancel(&info.queue, conn, id, &tag, ctx)
                    });
                }
                if !c.nowait {
                    s.out.method(
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
            }
            basic::AMQPMethod::Publish(p) => {
                if p.immediate {
                    return Err(AmqpError::new(ReplyCode::NotImplemented, "immediate=true"));
                }
                self.pending = Some(Pending {
                    exchange: p.exchange.to_string(),
                    routing_key: p.routing_key.to_string(),
                    mandatory: p.mandatory,
                    header: None,
                    body: BytesMut::new(),
                });
            }
            basic::AMQPMethod::Get(mut g) => {
                g.queue = self.queue_name(g.queue.as_str())?.into();
                s.check(Access::Read, "queue", g.queue.as_str())?;
                let got = s
                    .core
                    .with_vhost(s.vhost, |vh, ctx| {
                        vh.get(g.queue.as_str(), g.no_ack, conn, ctx)
                    })
                    .ok_or_else(|| vhost_gone(s))??;
                match got {
                    None => s.out.method(
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                    ),
                    Some((qm, remaining)) => {
                        let Some(msg) = s.core.page_in(s.vhost, g.queue.as_str(), &qm) else {
                            if !g.no_ack {
                                let q = g.queue.as_str();
                                s.core.with_vhost(s.vhost, |vh, ctx| {
                                    vh.settle(q, vec![qm], false, false, ctx);
                                });
                            }
                            return Err(AmqpError::new(
                                ReplyCode::InternalError,
                                "message body could not be read from the store",
                            ));
                        };
                        let tag = self.next_tag;
                        self.next_tag += 1;
                        s.out.with_content(
                            id,
                            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                                delivery_tag: tag,
                                redelivered: qm.redelivered,
                                exchange: msg.exchange.as_str().into(),
                                routing_key: msg.routing_key.as_str().into(),
                                message_count: remaining,
                            })),
                            &msg,
                        );
                        if !g.no_ack {
                            self.unacked.insert(
                                tag,
                                Unacked {
                                    queue: g.queue.as_str().into(),
                                    msg: qm,
                                    credit: None,
                                },
                            );
                        }
                    }
                }
            }
            basic::AMQPMethod::Ack(a) => {
                self.settle_or_buffer(s, a.delivery_tag, a.multiple, SettleKind::Ack)?
            }
            basic::AMQPMethod::Nack(n) => {
                let kind = if n.requeue {
                    SettleKind::Requeue
                } else {
                    SettleKind::Discard
                };
                self.settle_or_buffer(s, n.delivery_tag, n.multiple, kind)?
            }
            basic::AMQPMethod::Reject(r) => {
                let kind = if r.requeue {
                    SettleKind::Requeue
                } else {
                    SettleKind::Discard
                };
                self.settle_or_buffer(s, r.delivery_tag, false, kind)?
            }
            basic::AMQPMethod::Recover(basic::Recover { requeue: false })
            | basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue: false }) => {
                return Err(AmqpError::new(ReplyCode::NotImplemented, "requeue=false"));
            }
            basic::AMQPMethod::Recover(_) | basic::AMQPMethod::RecoverAsync(_) => {
                let all: Vec<u64> = self.unacked.keys().copied().collect();
                if let Some(last) = all.last() {
                    self.settle(s, *last, true, SettleKind::Requeue)?;
                }
                if matches!(m, basic::AMQPMethod::Recover(_)) {
                    s.out.method(
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                    );
                }
            }
            _ => {
                return Err(AmqpError::new(
                    ReplyCode::CommandInvalid,
                    "unexpected basic method",
                ))
            }
        }
        Ok(())
    }

    fn settle_or_buffer(
        &mut self,
        s: &mut Session<'_>,
        tag: u64,
        multiple: bool,
        kind: SettleKind,
    ) -> Result<(), AmqpError> {
        if let Some(tx) = &mut self.tx {
            if !multiple && !self.unacked.contains_key(&tag) {
                return Err(AmqpError::precondition(format!(
                    "unknown delivery tag {tag}"
                )));
            }
            tx.push(TxOp::Settle(tag, multiple, kind));
            return Ok(());
        }
        self.settle(s, tag, multiple, kind)
    }

    /// Ack/nack/reject: `tag` 0 with `multiple` means everything.
    fn settle(
        &mut self,
        s: &mut Session<'_>,
        tag: u64,
        multiple: bool,
        kind: SettleKind,
    ) -> Result<(), AmqpError> {
        let tags: Vec<u64> = if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            let t: Vec<u64> = self.unacked.range(..=upto).map(|(k, _)| *k).collect();
            if t.is_empty() && tag != 0 {
                return Err(AmqpError::precondition(format!(
                    "unknown delivery tag {tag}"
                )));
            }
            t
        } else {
            if !self.unacked.contains_key(&tag) {
                return Err(AmqpError::precondition(format!(
                    "unknown delivery tag {tag}"
                )));
            }
            vec![tag]
        };
        let mut by_queue: HashMap<Arc<str>, Vec<crate::model::QueuedMessage>> = HashMap::new();
        for t in tags {
            if let Some(u) = self.unacked.remove(&t) {
                if let Some(c) = &u.credit {
                    c.release(1);
                    self.global.release(1);
                }
                by_queue.entry(u.queue).or_default().push(u.msg);
            }
        }
        let (requeue, dead_letter) = match kind {
            SettleKind::Ack => (false, false),
            SettleKind::Requeue => (true, false),
            SettleKind::Discard => (false, true),
        };
        s.core.with_vhost(s.vhost, |vh, ctx| {
            for (q, msgs) in by_queue {
                vh.settle(&q, msgs, requeue, dead_letter, ctx);
            }
        });
        self.kick_consumers(s);
        Ok(())
    }

    // ===== tx =====

    fn tx_method(&mut self, s: &mut Session<'_>, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        let id = self.id;
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirm {
                    return Err(AmqpError::precondition(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if self.tx.is_none() {
                    self.tx = Some(Vec::new());
                }
                s.out
                    .method(id, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(ops) = self.tx.replace(Vec::new()) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                for op in ops {
                    match op {
                        TxOp::Publish(b) => {
                            let (exchange, msg, mandatory) = *b;
                            self.route_message(s, &exchange, msg, mandatory, None)?;
                        }
                        TxOp::Settle(tag, multiple, kind) => {
                            // tags settled twice in one transaction are ignored the second time
                            let _ = self.settle(s, tag, multiple, kind);
                        }
                    }
                }
                // sent once the committed messages and acks are durable (the connection
                // holds its input back until then)
                s.deferred
                    .push((id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}))));
            }
            tx::AMQPMethod::Rollback(_) => {
                if self.tx.is_none() {
                    return Err(AmqpError::precondition("channel is not transactional"));
                }
                self.tx = Some(Vec::new());
                s.out.method(
                    id,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            _ => {
                return Err(AmqpError::new(
                    ReplyCode::CommandInvalid,
                    "unexpected tx method",
                ))
            }
        }
        Ok(())
    }

    // ===== content =====

    /// A content header frame arrived.
    ///
    /// # Errors
    /// 505 when no publish is pending, 406 when the announced size is too large.
    pub fn handle_header(
        &mut self,
        s: &mut Session<'_>,
        h: ContentHeader,
    ) -> Result<(), AmqpError> {
        let Some(p) = &mut self.pending else {
            return Err(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                "expected method frame, got non method frame instead",
            ));
        };
        if p.header.is_some() {
            return Err(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                "expected content body, got content header instead",
            ));
        }
        if h.class_id != 60 {
            return Err(AmqpError::new(
                ReplyCode::FrameError,
                format!("content header for class {} not allowed", h.class_id),
            ));
        }
        if h.body_size > s.max_message_size {
            self.pending = None;
            return Err(AmqpError::precondition(format!(
                "message size {} is larger than configured max size {}",
                h.body_size, s.max_message_size
            )));
        }
        p.body.reserve(h.body_size as usize);
        let done = h.body_size == 0;
        p.header = Some(h);
        if done {
            self.finish_publish(s)?;
        }
        Ok(())
    }

    /// A content body frame arrived.
    ///
    /// # Errors
    /// 505 when no header preceded it, 501 when the body overruns the announced size.
    pub fn handle_body(&mut self, s: &mut Session<'_>, b: Bytes) -> Result<(), AmqpError> {
        let Some(p) = &mut self.pending else {
            return Err(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                "expected method frame, got non method frame instead",
            ));
        };
        let Some(h) = &p.header else {
            return Err(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                "expected content header for class 60, got non content header frame instead",
            ));
        };
        p.body.extend_from_slice(&b);
        let expected = h.body_size;
        if p.body.len() as u64 > expected {
            return Err(AmqpError::new(
                ReplyCode::FrameError,
                "content body exceeds announced size",
            ));
        }
        if p.body.len() as u64 == expected {
            self.finish_publish(s)?;
        }
        Ok(())
    }

    fn finish_publish(&mut self, s: &mut Session<'_>) -> Result<(), AmqpError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let Some(h) = p.header else { return Ok(()) };
        let seq = if self.confirm {
            self.publish_seq += 1;
            Some(self.publish_seq)
        } else {
            None
        };
        s.check(Access::Write, "exchange", &p.exchange)?;
        if let Some(uid) = h.properties.user_id() {
            if uid.as_str() != s.user {
                return Err(AmqpError::precondition(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    uid, s.user
                )));
            }
        }
        if let Some(exp) = h.properties.expiration() {
            if exp.as_str().parse::<u64>().is_err() {
                return Err(AmqpError::precondition(format!(
                    "invalid expiration '{exp}'"
                )));
            }
        }
        let exchange = p.exchange.clone();
        let ex_ok = s
            .core
            .with_vhost(s.vhost, |vh, _| {
                vh.exchanges.get(&exchange).map(|e| e.internal)
            })
            .ok_or_else(|| vhost_gone(s))?;
        match ex_ok {
            None => return Err(AmqpError::not_found("exchange", &exchange, s.vhost)),
            Some(true) => {
                return Err(AmqpError::access_refused(format!(
                    "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                    s.vhost
                )))
            }
            Some(false) => {}
        }
        let (properties, raw_properties) = match h.properties.reply_to() {
            Some(r) if r.as_str() == REPLY_TO => {
                let Some(q) = &self.reply_queue else {
                    return Err(AmqpError::precondition(
                        "fast reply consumer does not exist",
                    ));
                };
                let props = h.properties.clone().with_reply_to(q.as_str().into());
                let raw = crate::protocol::frame::encode_properties(&props);
                (props, raw)
            }
            _ => (h.properties, h.raw_properties),
        };
        let msg = Arc::new(Message {
            exchange: p.exchange,
            routing_key: p.routing_key,
            properties,
            raw_properties,
            mem: Some(crate::model::message::MemTicket::new(
                &s.core.memory,
                p.body.len() as u64,
            )),
            body: p.body.freeze(),
        });
        if let Some(tx) = &mut self.tx {
            tx.push(TxOp::Publish(Box::new((exchange, msg, p.mandatory))));
            return Ok(());
        }
        self.route_message(s, &exchange, msg, p.mandatory, seq)
    }

    fn route_message(
        &mut self,
        s: &mut Session<'_>,
        exchange: &str,
        msg: Arc<Message>,
        mandatory: bool,
        seq: Option<u64>,
    ) -> Result<(), AmqpError> {
        crate::model::stats::bump(&self.info.publish, 1);
        let outcome = s
            .core
            .with_vhost(s.vhost, |vh, ctx| {
                let outcome = vh.publish(exchange, msg.clone(), ctx);
                let st = &vh.stats;
                if !outcome.routed {
                    crate::model::stats::bump(
                        if mandatory {
                            &st.return_unroutable
                        } else {
                            &st.drop_unroutable
                        },
                        1,
                    );
                }
                if seq.is_some() && !outcome.rejected {
                    crate::model::stats::bump(&st.confirm, 1);
                }
                outcome
            })
            .ok_or_else(|| vhost_gone(s))?;
        if !outcome.routed && mandatory {
            s.out.with_content(
                self.id,
                AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: ReplyCode::NoRoute.code(),
                    reply_text: "NO_ROUTE".into(),
                    exchange: msg.exchange.as_str().into(),
                    routing_key: msg.routing_key.as_str().into(),
                })),
                &msg,
            );
        }
        if let Some(tag) = seq {
            let m = if outcome.rejected {
                basic::AMQPMethod::Nack(basic::Nack {
                    delivery_tag: tag,
                    multiple: false,
                    requeue: false,
                })
            } else {
                basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: tag,
                    multiple: false,
                })
            };
            if s.core.store.kind() == crate::storage::StorageType::Memory {
                s.out.method(self.id, AMQPClass::Basic(m));
            } else {
                s.deferred.push((self.id, AMQPClass::Basic(m)));
            }
        }
        Ok(())
    }

    /// Mark the channel closing after a channel exception.
    pub fn fail(&mut self, s: &mut Session<'_>) {
        self.cleanup(s);
        self.state = ChannelState::Closing;
    }
}
