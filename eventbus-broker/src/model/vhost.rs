//! A virtual host: exchanges, queues, bindings, and the operations on them (declare, bind,
//! route, enqueue, dispatch, dead-letter). Pure state: callers hold the broker lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

use super::exchange::{Binding, Dest, Exchange, ExchangeKind};
use super::message::{unix_ms, MemTicket, MemoryGauge, Message, QueuedMessage};
use super::queue::{Consumer, Enqueued, Notify, Overflow, Queue, QueueArgs};
use crate::error::AmqpError;
use crate::protocol::constants::ReplyCode;
use crate::protocol::frame::encode_properties;
use crate::protocol::method::{long_str, value_as_i64, value_as_str, value_display, value_eq};
use crate::storage::{MessageStore, MsgMeta, QueueKey, StoredMessage};

/// Context for operations that touch messages.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// Message store.
    pub store: &'a dyn MessageStore,
    /// The time used for TTL decisions in this operation.
    pub now: Instant,
    /// Page bodies of persistent messages in durable queues out to the store once appended
    /// (memory is above the paging threshold).
    pub page_out: bool,
    /// The broker's memory gauge (bodies read back from the store for dead-lettering are
    /// accounted on it).
    pub memory: &'a Arc<MemoryGauge>,
}

/// Where [`VHost::enqueue`] put a message.
enum Placed {
    /// Refused (`reject-publish` overflow, or no such queue).
    Refused,
    /// Queued in memory only (transient message or queue, or dropped at once by overflow).
    Memory,
    /// Queued under this id and priority; the message must be appended to the store.
    Persist(u64, u8),
}

/// Outcome of a publish.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    /// Routed to at least one queue.
    pub routed: bool,
    /// Some queue refused it (reject-publish) or the store failed: nack in confirm mode.
    pub rejected: bool,
}

/// What `queue.declare` reports.
#[derive(Debug)]
pub struct QueueInfo {
    /// Queue name (server-generated if requested).
    pub name: String,
    /// Ready messages.
    pub messages: u32,
    /// Consumers.
    pub consumers: u32,
}

/// A virtual host.
#[derive(Debug)]
pub struct VHost {
    /// Name.
    pub name: String,
    /// Exchanges by name (including the default exchange `""`).
    pub exchanges: HashMap<String, Exchange>,
    /// Queues by name.
    pub queues: HashMap<String, Queue>,
    /// A durable definition changed since the flag was last cleared.
    pub dirty: bool,
    /// Message counters (management API, metrics).
    pub stats: super::stats::VhostCounters,
}

fn inequivalent(
    arg: &str,
    kind: &str,
    name: &str,
    vhost: &str,
    received: String,
    current: String,
) -> AmqpError {
    AmqpError::precondition(format!(
        "inequivalent arg '{arg}' for {kind} '{name}' in vhost '{vhost}': received '{received}' but current is '{current}'"
    ))
}

fn args_equivalent(a: &FieldTable, b: &FieldTable, keys: Option<&[&str]>) -> Option<String> {
    let relevant = |k: &str| keys.is_none_or(|ks| ks.contains(&k));
    let all: HashSet<&str> = a
        .inner()
        .keys()
        .chain(b.inner().keys())
        .map(|k| k.as_str())
        .filter(|k| relevant(k))
        .collect();
    let mut all: Vec<&str> = all.into_iter().collect();
    all.sort_unstable();
    for k in all {
        match (a.inner().get(k), b.inner().get(k)) {
            (Some(x), Some(y)) if value_eq(x, y) => {}
            (None, None) => {}
            _ => return Some(k.to_owned()),
        }
    }
    None
}

/// Queue arguments compared on redeclare (RabbitMQ's list).
const QUEUE_EQUIV_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
];

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Random alphanumeric-ish suffix for server-generated names.
pub fn random_suffix() -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    (0..22)
        .map(|_| ALPHA[fastrand::usize(..ALPHA.len())] as char)
        .collect()
}

impl VHost {
    /// A vhost with the default and `amq.*` exchanges.
    pub fn new(name: &str) -> Self {
        let mut v = Self {
            name: name.to_owned(),
            exchanges: HashMap::new(),
            queues: HashMap::new(),
            dirty: false,
            stats: Default::default(),
        };
        for (n, k) in [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            v.exchanges.insert(
                n.to_owned(),
                Exchange::new(n, k, true, false, false, FieldTable::default()),
            );
        }
        v
    }

    fn queue_key(&self, q: &str) -> QueueKey {
        QueueKey {
            vhost: self.name.clone(),
            queue: q.to_owned(),
        }
    }

    // ===== exchanges =====

    /// `exchange.declare`.
    ///
    /// # Errors
    /// 404 (passive, missing), 403 (reserved names), 406 (inequivalent), 503 (unknown type).
    #[allow(clippy::too_many_arguments)]
    pub fn declare_exchange(
        &mut self,
        name: &str,
        kind: &str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        if passive {
            return if self.exchanges.contains_key(name) {
                Ok(())
            } else {
                Err(AmqpError::not_found("exchange", name, &self.name))
            };
        }
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with("amq.") && !self.exchanges.contains_key(name) {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let Some(k) = ExchangeKind::parse(kind) else {
            return Err(AmqpError::new(
                ReplyCode::CommandInvalid,
                format!("invalid exchange type '{kind}'"),
            ));
        };
        if let Some(ex) = self.exchanges.get(name) {
            let vh = &self.name;
            if ex.kind != k {
                return Err(inequivalent(
                    "type",
                    "exchange",
                    name,
                    vh,
                    kind.into(),
                    ex.kind.name().into(),
                ));
            }
            if ex.durable != durable {
                return Err(inequivalent(
                    "durable",
                    "exchange",
                    name,
                    vh,
                    durable.to_string(),
                    ex.durable.to_string(),
                ));
            }
            if ex.auto_delete != auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    "exchange",
                    name,
                    vh,
                    auto_delete.to_string(),
                    ex.auto_delete.to_string(),
                ));
            }
            if ex.internal != internal {
                return Err(inequivalent(
                    "internal",
                    "exchange",
                    name,
                    vh,
                    internal.to_string(),
                    ex.internal.to_string(),
                ));
            }
            if let Some(k) =
                args_equivalent(&arguments, &ex.arguments, Some(&["alternate-exchange"]))
            {
                let r = arguments
                    .inner()
                    .get(k.as_str())
                    .map(value_display)
                    .unwrap_or_else(|| "none".into());
                let c = ex
                    .arguments
                    .inner()
                    .get(k.as_str())
                    .map(value_display)
                    .unwrap_or_else(|| "none".into());
                return Err(inequivalent(&k, "exchange", name, vh, r, c));
            }
            return Ok(());
        }
        self.exchanges.insert(
            name.to_owned(),
            Exchange::new(name, k, durable, auto_delete, internal, arguments),
        );
        if durable {
            self.dirty = true;
        }
        Ok(())
    }

    /// `exchange.delete`. Deleting a missing exchange succeeds, as in RabbitMQ.
    ///
    /// # Errors
    /// 403 for the default/amq.* exchanges, 406 when `if_unused` and bound.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "operation not permitted on the {} exchange",
                if name.is_empty() {
                    "default".to_owned()
                } else {
                    format!("'{name}'")
                }
            )));
        }
        let Some(ex) = self.exchanges.get(name) else {
            return Ok(());
        };
        if if_unused
            && (!ex.bindings.is_empty()
                || self.exchanges.values().any(|e| {
                    e.bindings
                        .iter()
                        .any(|b| b.dest == Dest::Exchange(name.to_owned()))
                }))
        {
            return Err(AmqpError::precondition(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        self.remove_exchange(name);
        Ok(())
    }

    fn remove_exchange(&mut self, name: &str) {
        if let Some(ex) = self.exchanges.remove(name) {
            if ex.durable {
                self.dirty = true;
            }
            let dest = Dest::Exchange(name.to_owned());
            self.remove_bindings_to(&dest);
        }
    }

    fn remove_bindings_to(&mut self, dest: &Dest) {
        let mut emptied = Vec::new();
        for ex in self.exchanges.values_mut() {
            if ex.remove_dest(dest) > 0 {
                self.dirty = true;
                if ex.auto_delete && ex.bindings.is_empty() {
                    emptied.push(ex.name.clone());
                }
            }
        }
        for e in emptied {
            self.remove_exchange(&e);
        }
    }

    /// `exchange.bind`/`queue.bind`.
    ///
    /// # Errors
    /// 404 when source or destination is missing, 403 on the default exchange.
    pub fn bind(
        &mut self,
        source: &str,
        dest: Dest,
        key: &str,
        args: FieldTable,
        conn_id: u64,
    ) -> Result<(), AmqpError> {
        self.check_bind(source, &dest, conn_id)?;
        let durable = self.dest_durable(&dest);
        let ex = self
            .exchanges
            .get_mut(source)
            .ok_or_else(|| AmqpError::not_found("exchange", source, &self.name))?;
        if ex.kind == ExchangeKind::Headers {
            if let Some(m) = args.inner().get("x-match") {
                if !matches!(
                    value_as_str(m).as_deref(),
                    Some("all" | "any" | "all-with-x" | "any-with-x")
                ) {
                    return Err(AmqpError::precondition(format!("Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x", value_display(m))));
                }
            }
        }
        if ex.bind(Binding {
            dest,
            key: key.to_owned(),
            args,
        }) && ex.durable
            && durable
        {
            self.dirty = true;
        }
        Ok(())
    }

    /// `exchange.unbind`/`queue.unbind`. Unbinding a missing binding succeeds.
    ///
    /// # Errors
    /// 404 when source or destination is missing.
    pub fn unbind(
        &mut self,
        source: &str,
        dest: Dest,
        key: &str,
        args: &FieldTable,
        conn_id: u64,
    ) -> Result<(), AmqpError> {
        self.check_bind(source, &dest, conn_id)?;
        let ex = self
            .exchanges
            .get_mut(source)
            .ok_or_else(|| AmqpError::not_found("exchange", source, &self.name))?;
        if ex.unbind(&dest, key, args) {
            if ex.durable {
                self.dirty = true;
            }
            if ex.auto_delete && ex.bindings.is_empty() {
                let n = ex.name.clone();
                self.remove_exchange(&n);
            }
        }
        Ok(())
    }

    fn dest_durable(&self, dest: &Dest) -> bool {
        match dest {
            Dest::Queue(q) => self.queues.get(q).is_some_and(|q| q.durable),
            Dest::Exchange(e) => self.exchanges.get(e).is_some_and(|e| e.durable),
        }
    }

    fn check_bind(&self, source: &str, dest: &Dest, conn_id: u64) -> Result<(), AmqpError> {
        if source.is_empty() || (matches!(dest, Dest::Exchange(e) if e.is_empty())) {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        match dest {
            Dest::Queue(q) => {
                let queue = self
                    .queues
                    .get(q)
                    .ok_or_else(|| AmqpError::not_found("queue", q, &self.name))?;
                self.check_exclusive(queue, conn_id)?;
            }
            Dest::Exchange(e) => {
                if !self.exchanges.contains_key(e) {
                    return Err(AmqpError::not_found("exchange", e, &self.name));
                }
            }
        }
        if !self.exchanges.contains_key(source) {
            return Err(AmqpError::not_found("exchange", source, &self.name));
        }
        Ok(())
    }

    // ===== queues =====

    fn check_exclusive(&self, q: &Queue, conn_id: u64) -> Result<(), AmqpError> {
        match q.exclusive_owner {
            Some(owner) if owner != conn_id => Err(AmqpError::new(
                ReplyCode::ResourceLocked,
                format!(
                    "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                    q.name, self.name
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Look a queue up, enforcing exclusivity.
    ///
    /// # Errors
    /// 404 when missing, 405 when exclusive to another connection.
    pub fn queue_mut(&mut self, name: &str, conn_id: u64) -> Result<&mut Queue, AmqpError> {
        let q = self
            .queues
            .get(name)
            .ok_or_else(|| AmqpError::not_found("queue", name, &self.name))?;
        self.check_exclusive(q, conn_id)?;
        self.queues
            .get_mut(name)
            .ok_or_else(|| AmqpError::not_found("queue", name, &self.name))
    }

    /// `queue.declare`.
    ///
    /// # Errors
    /// 404 (passive), 403 (reserved name), 405 (exclusive), 406 (inequivalent/invalid args).
    #[allow(clippy::too_many_arguments)]
    pub fn declare_queue(
        &mut self,
        name: &str,
        server_named: bool,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: FieldTable,
        conn_id: u64,
        now: Instant,
    ) -> Result<QueueInfo, AmqpError> {
        let vh = self.name.clone();
        if passive {
            let q = self.queue_mut(name, conn_id)?;
            q.last_used = now;
            return Ok(QueueInfo {
                name: name.to_owned(),
                messages: q.len() as u32,
                consumers: q.consumers.len() as u32,
            });
        }
        let name = if name.is_empty() {
            format!("amq.gen-{}", random_suffix())
        } else if name.starts_with("amq.") && !server_named {
            return Err(AmqpError::access_refused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        } else {
            name.to_owned()
        };
        if let Some(q) = self.queues.get(&name) {
            self.check_exclusive(q, conn_id)?;
            let q = &self.queues[&name];
            if q.exclusive_owner.is_some() != exclusive {
                // RabbitMQ reports an exclusivity mismatch as RESOURCE_LOCKED, and checks it
                // before durable/auto_delete/arguments (`check_exclusive_access(.., strict)`)
                return Err(AmqpError::new(
                    ReplyCode::ResourceLocked,
                    format!(
                        "cannot obtain exclusive access to locked queue '{name}' in vhost '{vh}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
                    ),
                ));
            }
            if q.durable != durable {
                return Err(inequivalent(
                    "durable",
                    "queue",
                    &name,
                    &vh,
                    durable.to_string(),
                    q.durable.to_string(),
                ));
            }
            if q.auto_delete != auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    "queue",
                    &name,
                    &vh,
                    auto_delete.to_string(),
                    q.auto_delete.to_string(),
                ));
            }
            if let Some(k) = args_equivalent(&arguments, &q.arguments, Some(QUEUE_EQUIV_ARGS)) {
                let r = arguments
                    .inner()
                    .get(k.as_str())
                    .map(value_display)
                    .unwrap_or_else(|| "none".into());
                let c = q
                    .arguments
                    .inner()
                    .get(k.as_str())
                    .map(value_display)
                    .unwrap_or_else(|| "none".into());
                return Err(inequivalent(&k, "queue", &name, &vh, r, c));
            }
            let q = self
                .queues
                .get_mut(&name)
                .ok_or_else(|| AmqpError::not_found("queue", &name, &vh))?;
            q.last_used = now;
            return Ok(QueueInfo {
                name,
                messages: q.len() as u32,
                consumers: q.consumers.len() as u32,
            });
        }
        let args = QueueArgs::parse(&arguments, &name, &vh)?;
        let q = Queue::new(
            &name,
            durable,
            auto_delete,
            exclusive.then_some(conn_id),
            arguments,
            args,
        );
        if durable {
            self.dirty = true;
        }
        self.queues.insert(name.clone(), q);
        Ok(QueueInfo {
            name,
            messages: 0,
            consumers: 0,
        })
    }

    /// `queue.purge`: returns the number of messages removed.
    ///
    /// # Errors
    /// 404/405.
    pub fn purge_queue(
        &mut self,
        name: &str,
        conn_id: u64,
        ctx: Ctx<'_>,
    ) -> Result<u32, AmqpError> {
        let key = self.queue_key(name);
        let q = self.queue_mut(name, conn_id)?;
        let gone = q.purge();
        if q.durable {
            for m in &gone {
                if m.msg.persistent() {
                    let _ = ctx.store.ack(&key, m.id);
                }
            }
        }
        Ok(gone.len() as u32)
    }

    /// `queue.delete`: returns the number of ready messages deleted. Missing queues succeed.
    ///
    /// # Errors
    /// 405 (exclusive), 406 (if-unused / if-empty).
    pub fn delete_queue(
        &mut self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn_id: u64,
        ctx: Ctx<'_>,
    ) -> Result<u32, AmqpError> {
        let Some(q) = self.queues.get(name) else {
            return Ok(0);
        };
        self.check_exclusive(q, conn_id)?;
        if if_unused && !q.consumers.is_empty() {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && !q.is_empty() {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        Ok(self.remove_queue(name, ctx))
    }

    /// Remove a queue unconditionally: cancels consumers, drops bindings and stored messages.
    pub fn remove_queue(&mut self, name: &str, ctx: Ctx<'_>) -> u32 {
        let Some(q) = self.queues.remove(name) else {
            return 0;
        };
        self.stats.retired.absorb(&q.stats.load());
        for c in &q.consumers {
            let _ = c.tx.send(Notify::Cancelled {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
            });
        }
        if q.durable {
            self.dirty = true;
            let _ = ctx.store.drop_queue(&self.queue_key(name));
        }
        self.remove_bindings_to(&Dest::Queue(name.to_owned()));
        q.len() as u32
    }

    // ===== routing and publishing =====

    /// Queues a message published to `exchange` with `routing_key` reaches (following
    /// exchange-to-exchange bindings and alternate exchanges).
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Vec<String> {
        if exchange.is_empty() {
            return if self.queues.contains_key(routing_key) {
                vec![routing_key.to_owned()]
            } else {
                Vec::new()
            };
        }
        let mut queues: Vec<String> = Vec::new();
        let mut seen_q: HashSet<String> = HashSet::new();
        let mut visited: HashSet<String> = HashSet::new();
        let mut stack = vec![exchange.to_owned()];
        let mut dests = Vec::new();
        while let Some(x) = stack.pop() {
            if !visited.insert(x.clone()) {
                continue;
            }
            let Some(ex) = self.exchanges.get(&x) else {
                continue;
            };
            dests.clear();
            ex.route(routing_key, headers, &mut dests);
            let before = queues.len();
            let mut had_exchange_dest = false;
            for d in dests.drain(..) {
                match d {
                    Dest::Queue(q) => {
                        if self.queues.contains_key(&q) && seen_q.insert(q.clone()) {
                            queues.push(q);
                        }
                    }
                    Dest::Exchange(e) => {
                        had_exchange_dest = true;
                        stack.push(e);
                    }
                }
            }
            if queues.len() == before && !had_exchange_dest {
                if let Some(ae) = &ex.alternate {
                    stack.push(ae.clone());
                }
            }
        }
        queues
    }

    /// Route and enqueue a message, then dispatch to consumers.
    pub fn publish(&mut self, exchange: &str, msg: Arc<Message>, ctx: Ctx<'_>) -> PublishOutcome {
        let targets = self.route(
            exchange,
            &msg.routing_key,
            msg.properties.headers().as_ref(),
        );
        let mut out = PublishOutcome {
            routed: !targets.is_empty(),
            rejected: false,
        };
        super::stats::bump(&self.stats.publish, 1);
        let mut work = VecDeque::new();
        if !self.enqueue_all(&targets, &msg, ctx, &mut work) {
            out.rejected = true;
        }
        let touched = self.process_dead_letters(work, ctx);
        for q in targets.iter().chain(&touched) {
            self.dispatch(q, ctx);
        }
        out
    }

    /// Enqueue `msg` into every queue of `targets`, then append it to the store once for all
    /// the durable ones (one record shared by every queue, each acking its own membership).
    /// False if some queue refused it or the store failed. Overflowed heads are queued in
    /// `work` for dead-lettering.
    fn enqueue_all(
        &mut self,
        targets: &[String],
        msg: &Arc<Message>,
        ctx: Ctx<'_>,
        work: &mut VecDeque<(String, Vec<QueuedMessage>, &'static str)>,
    ) -> bool {
        let mut ok = true;
        let mut persist: Vec<(&str, u64, u8)> = Vec::new();
        for q in targets {
            match self.enqueue(q, msg.clone(), ctx, work) {
                Placed::Refused => ok = false,
                Placed::Memory => {}
                Placed::Persist(id, priority) => persist.push((q, id, priority)),
            }
        }
        if persist.is_empty() {
            return ok;
        }
        let mut stored = StoredMessage {
            id: persist[0].1,
            exchange: msg.exchange.clone(),
            routing_key: msg.routing_key.clone(),
            raw_properties: msg.raw_properties.clone(),
            body: msg.body.clone(),
            meta: MsgMeta {
                enqueued_at_ms: unix_ms(),
                ttl_ms: msg.expiration_ms().ok().flatten(),
            },
        };
        let appended = if let [(q, _, _)] = persist[..] {
            ctx.store.append(&self.queue_key(q), &stored)
        } else {
            let keys: Vec<(QueueKey, u64)> = persist
                .iter()
                .map(|&(q, id, _)| (self.queue_key(q), id))
                .collect();
            stored.id = 0;
            ctx.store.append_shared(&keys, &stored)
        };
        if appended.is_err() {
            return false;
        }
        if ctx.page_out {
            for (q, id, priority) in persist {
                if let Some(q) = self.queues.get_mut(q) {
                    q.page_out(id, priority);
                }
            }
        }
        ok
    }

    /// Enqueue into one queue (the store is the caller's business: see
    /// [`Placed::Persist`]). Overflowed heads are settled in the store and queued in `work`
    /// for dead-lettering.
    fn enqueue(
        &mut self,
        qname: &str,
        msg: Arc<Message>,
        ctx: Ctx<'_>,
        work: &mut VecDeque<(String, Vec<QueuedMessage>, &'static str)>,
    ) -> Placed {
        let Some(q) = self.queues.get_mut(qname) else {
            return Placed::Refused;
        };
        let persist = q.durable && msg.persistent();
        match q.enqueue(msg.clone(), ctx.now) {
            Enqueued::Accepted {
                id,
                priority,
                mut dropped,
            } => {
                // overflow may drop the new message itself: it is then never stored
                let kept = !dropped.iter().any(|d| d.id == id);
                if !dropped.is_empty() {
                    let dead_letter = q.args.dlx.is_some();
                    let names = (self.name.as_str(), qname);
                    forget(q.durable, names, &mut dropped, Some(id), dead_letter, ctx);
                    work.push_back((qname.to_owned(), dropped, "maxlen"));
                }
                if persist && kept {
                    Placed::Persist(id, priority)
                } else {
                    Placed::Memory
                }
            }
            Enqueued::Rejected => {
                if q.args.overflow == Overflow::RejectPublishDlx {
                    let qm = QueuedMessage {
                        id: 0,
                        msg,
                        redelivered: false,
                        expires_at: None,
                        priority: 0,
                        paged: None,
                    };
                    work.push_back((qname.to_owned(), vec![qm], "maxlen"));
                }
                Placed::Refused
            }
        }
    }

    /// Deliver what can be delivered from `qname`, dead-lettering expired heads.
    pub fn dispatch(&mut self, qname: &str, ctx: Ctx<'_>) {
        // queues that received dead letters are dispatched in turn (bounded: DLX cycles)
        let mut pending = self.dispatch_one(qname, ctx);
        let mut rounds = 1;
        while let Some(name) = pending.pop() {
            rounds += 1;
            if rounds > 1000 {
                break;
            }
            let touched = self.dispatch_one(&name, ctx);
            pending.extend(touched);
        }
    }

    /// Deliver from one queue; expired heads are dead-lettered. Returns the queues that
    /// received dead letters (no allocation when nothing expired).
    fn dispatch_one(&mut self, name: &str, ctx: Ctx<'_>) -> Vec<String> {
        let Some(q) = self.queues.get_mut(name) else {
            return Vec::new();
        };
        let mut expired = Vec::new();
        q.dispatch(ctx.now, &mut expired);
        if expired.is_empty() {
            return Vec::new();
        }
        let dead_letter = q.args.dlx.is_some();
        let names = (self.name.as_str(), name);
        forget(q.durable, names, &mut expired, None, dead_letter, ctx);
        self.process_dead_letters(VecDeque::from([(name.to_owned(), expired, "expired")]), ctx)
    }

    /// Expire heads of every queue and delete queues idle past `x-expires`.
    pub fn sweep(&mut self, ctx: Ctx<'_>) {
        let names: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| q.head_expires())
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            self.dispatch(&n, ctx);
        }
        let idle: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                q.args.expires.is_some_and(|ms| {
                    q.consumers.is_empty()
                        && ctx.now.duration_since(q.last_used).as_millis() as u64 >= ms
                })
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in idle {
            self.remove_queue(&n, ctx);
        }
    }

    /// Dead-letter messages removed from `source` for `reason`; returns queues that received
    /// messages (the caller dispatches them).
    ///
    /// All of `work` is processed: these messages are already gone from their queue (and
    /// settled in the store), so stopping early would lose them. The work is finite because
    /// a message never re-enters a queue it went through without a rejection since
    /// ([`is_dead_letter_cycle`]); each hop of a message adds to its `x-death`.
    fn process_dead_letters(
        &mut self,
        mut work: VecDeque<(String, Vec<QueuedMessage>, &'static str)>,
        ctx: Ctx<'_>,
    ) -> Vec<String> {
        let mut touched = Vec::new();
        while let Some((source, msgs, reason)) = work.pop_front() {
            let Some(q) = self.queues.get(&source) else {
                continue;
            };
            let Some(dlx) = q.args.dlx.clone() else {
                continue;
            };
            let dlrk = q.args.dlrk.clone();
            for qm in msgs {
                let dl = dead_lettered(&qm.msg, &source, reason, &dlx, dlrk.as_deref());
                let dl = Arc::new(dl);
                let mut targets =
                    self.route(&dlx, &dl.routing_key, dl.properties.headers().as_ref());
                // like RabbitMQ: a message that would reach a queue it already went through is
                // dropped there unless the cycle includes a rejection (a client's decision)
                if reason != "rejected" {
                    let deaths = dl
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| h.inner().get("x-death").and_then(|v| v.as_array()));
                    if let Some(deaths) = deaths {
                        targets.retain(|t| {
                            let cycle = is_dead_letter_cycle(t, deaths.as_slice());
                            if cycle {
                                tracing::debug!(
                                    queue = %t,
                                    from = %source,
                                    "dead-letter cycle without rejection; message dropped for this queue"
                                );
                            }
                            !cycle
                        });
                    }
                }
                // stored once for all its durable targets, like a published message
                self.enqueue_all(&targets, &dl, ctx, &mut work);
                touched.extend(targets);
            }
        }
        touched.sort();
        touched.dedup();
        touched
    }

    /// Dead-letter settled messages (basic.reject/nack without requeue).
    pub fn reject_to_dlx(&mut self, qname: &str, msgs: Vec<QueuedMessage>, ctx: Ctx<'_>) {
        let touched =
            self.process_dead_letters(VecDeque::from([(qname.to_owned(), msgs, "rejected")]), ctx);
        for t in touched {
            self.dispatch(&t, ctx);
        }
    }

    // ===== consumers =====

    /// Attach a consumer.
    ///
    /// # Errors
    /// 404/405, 403 when exclusivity conflicts.
    pub fn consume(
        &mut self,
        qname: &str,
        consumer: Consumer,
        ctx: Ctx<'_>,
    ) -> Result<(), AmqpError> {
        let vh = self.name.clone();
        let q = self.queue_mut(qname, consumer.conn_id)?;
        if (consumer.exclusive && !q.consumers.is_empty())
            || q.consumers.iter().any(|c| c.exclusive)
        {
            return Err(AmqpError::access_refused(format!(
                "queue '{qname}' in vhost '{vh}' in exclusive use"
            )));
        }
        q.had_consumers = true;
        q.last_used = ctx.now;
        q.consumers.push(consumer);
        self.dispatch(qname, ctx);
        Ok(())
    }

    /// Detach a consumer; deletes an auto-delete queue that lost its last consumer.
    pub fn cancel(&mut self, qname: &str, conn_id: u64, channel: u16, tag: &str, ctx: Ctx<'_>) {
        let Some(q) = self.queues.get_mut(qname) else {
            return;
        };
        q.consumers
            .retain(|c| !(c.conn_id == conn_id && c.channel == channel && &*c.tag == tag));
        q.last_used = ctx.now;
        if q.auto_delete && q.had_consumers && q.consumers.is_empty() {
            self.remove_queue(qname, ctx);
        } else {
            // single-active-consumer: the next one may now take over
            self.dispatch(qname, ctx);
        }
    }

    /// A channel or connection ends: detach its `consumers` (queue, channel, tag), put its
    /// delivered-but-unsettled messages back (queue, message, counted in the queue's
    /// `unacked`), and only then dispatch. Requeued messages return to their original place
    /// (ids order a queue), so the next consumer of a single-active-consumer queue sees the
    /// unacked tail first and in order — not messages published after it that a dispatch on
    /// cancel would otherwise hand over before the tail is back.
    pub fn release(
        &mut self,
        conn_id: u64,
        consumers: &[(Arc<str>, u16, Arc<str>)],
        requeue: Vec<(Arc<str>, QueuedMessage, bool)>,
        ctx: Ctx<'_>,
    ) {
        let mut touched: Vec<Arc<str>> = Vec::new();
        for (qname, channel, tag) in consumers {
            if let Some(q) = self.queues.get_mut(&**qname) {
                q.consumers
                    .retain(|c| !(c.conn_id == conn_id && c.channel == *channel && c.tag == *tag));
                q.last_used = ctx.now;
                touched.push(qname.clone());
            }
        }
        for (qname, qm, counted) in requeue {
            if let Some(q) = self.queues.get_mut(&*qname) {
                if counted {
                    q.unacked = q.unacked.saturating_sub(1);
                }
                q.requeue(qm);
                touched.push(qname);
            }
        }
        touched.sort();
        touched.dedup();
        for qname in touched {
            let Some(q) = self.queues.get(&*qname) else {
                continue;
            };
            if q.auto_delete && q.had_consumers && q.consumers.is_empty() {
                self.remove_queue(&qname, ctx);
            } else {
                // single-active-consumer: the next one takes over here
                self.dispatch(&qname, ctx);
            }
        }
    }

    /// `basic.get`: the next message and the remaining count.
    ///
    /// # Errors
    /// 404/405.
    pub fn get(
        &mut self,
        qname: &str,
        no_ack: bool,
        conn_id: u64,
        ctx: Ctx<'_>,
    ) -> Result<Option<(QueuedMessage, u32)>, AmqpError> {
        let key = self.queue_key(qname);
        let q = self.queue_mut(qname, conn_id)?;
        q.last_used = ctx.now;
        let mut expired = q.take_expired(ctx.now);
        if !expired.is_empty() {
            let dead_letter = q.args.dlx.is_some();
            forget(
                q.durable,
                (&key.vhost, &key.queue),
                &mut expired,
                None,
                dead_letter,
                ctx,
            );
        }
        let mut msg = q.pop();
        {
            use super::stats::bump;
            let st = &q.stats;
            match &msg {
                None => bump(&st.get_empty, 1),
                Some(m) => {
                    bump(if no_ack { &st.get_no_ack } else { &st.get }, 1);
                    if m.redelivered {
                        bump(&st.redeliver, 1);
                    }
                }
            }
        }
        if let Some(m) = &mut msg {
            if no_ack && m.paged.is_some() {
                // settled at once: read the body back before the store forgets it
                if let Some(full) = ctx
                    .store
                    .read(&key, m.id)
                    .ok()
                    .flatten()
                    .and_then(Message::from_stored)
                {
                    m.msg = Arc::new(full);
                    m.paged = None;
                }
            }
            if no_ack {
                if q.durable && m.msg.persistent() {
                    let _ = ctx.store.ack(&key, m.id);
                }
            } else {
                q.unacked += 1;
            }
        }
        let remaining = q.len() as u32;
        if !expired.is_empty() {
            let touched = self.process_dead_letters(
                VecDeque::from([(qname.to_owned(), expired, "expired")]),
                ctx,
            );
            for t in touched {
                self.dispatch(&t, ctx);
            }
        }
        Ok(msg.map(|m| (m, remaining)))
    }

    /// Settle delivered messages: `requeue` puts them back; otherwise they are acked, or
    /// dead-lettered when `dead_letter` (reject/nack without requeue).
    pub fn settle(
        &mut self,
        qname: &str,
        msgs: Vec<QueuedMessage>,
        requeue: bool,
        dead_letter: bool,
        ctx: Ctx<'_>,
    ) {
        let Some(q) = self.queues.get_mut(qname) else {
            return;
        };
        q.unacked = q.unacked.saturating_sub(msgs.len());
        if !requeue && !dead_letter {
            super::stats::bump(&q.stats.ack, msgs.len() as u64);
        }
        if requeue {
            for m in msgs {
                q.requeue(m);
            }
            self.dispatch(qname, ctx);
            return;
        }
        let dead_letter = dead_letter && q.args.dlx.is_some();
        let mut msgs = msgs;
        let names = (self.name.as_str(), qname);
        forget(q.durable, names, &mut msgs, None, dead_letter, ctx);
        if dead_letter {
            self.reject_to_dlx(qname, msgs, ctx);
        }
    }

    /// Move up to `max` ready messages (all if `None`) from `source` to `dests`
    /// round-robin, in order, each under the broker lock: a message is enqueued into its
    /// destination (and appended to the store for a durable destination) before it is
    /// settled in the source, so it is never lost nor left in both. Properties, headers and
    /// persistence are kept. Stops early when a destination refuses a message
    /// (`reject-publish`); that message stays at the head of `source`. The round-robin
    /// starts at `dests[first % dests.len()]` (callers moving in batches pass the number
    /// already moved). Returns the number moved.
    ///
    /// # Errors
    /// 404 for a missing queue, 406 when `dests` is empty or contains `source`, 405 for an
    /// exclusive queue of another connection.
    pub fn move_messages(
        &mut self,
        source: &str,
        dests: &[String],
        max: Option<u64>,
        first: usize,
        conn_id: u64,
        ctx: Ctx<'_>,
    ) -> Result<u64, AmqpError> {
        self.queue_mut(source, conn_id)?;
        if dests.is_empty() {
            return Err(AmqpError::precondition("no destination queues"));
        }
        for d in dests {
            self.queue_mut(d, conn_id)?;
            if d == source {
                return Err(AmqpError::precondition(format!(
                    "queue '{source}' cannot be moved into itself"
                )));
            }
        }
        let key = self.queue_key(source);
        let mut moved = 0u64;
        let mut work = VecDeque::new();
        let mut next = first;
        while max.is_none_or(|m| moved < m) {
            let Some(q) = self.queues.get_mut(source) else {
                break;
            };
            let src_durable = q.durable;
            let mut expired = q.take_expired(ctx.now);
            if !expired.is_empty() {
                let dl = q.args.dlx.is_some();
                forget(
                    src_durable,
                    (&key.vhost, source),
                    &mut expired,
                    None,
                    dl,
                    ctx,
                );
                work.push_back((source.to_owned(), expired, "expired"));
                continue;
            }
            let Some(q) = self.queues.get_mut(source) else {
                break;
            };
            let Some(mut qm) = q.pop() else { break };
            if qm.paged.is_some() && !page_in(&key, &mut qm, ctx) {
                continue; // unreadable: logged and settled by page_in
            }
            let dest = &dests[next % dests.len()];
            match self.enqueue(dest, qm.msg.clone(), ctx, &mut work) {
                Placed::Refused => {
                    if let Some(q) = self.queues.get_mut(source) {
                        q.put_back(qm);
                    }
                    break;
                }
                Placed::Memory => {}
                Placed::Persist(id, _) => {
                    let stored = StoredMessage {
                        id,
                        exchange: qm.msg.exchange.clone(),
                        routing_key: qm.msg.routing_key.clone(),
                        raw_properties: qm.msg.raw_properties.clone(),
                        body: qm.msg.body.clone(),
                        meta: MsgMeta {
                            enqueued_at_ms: unix_ms(),
                            ttl_ms: qm.msg.expiration_ms().ok().flatten(),
                        },
                    };
                    if let Err(e) = ctx.store.append(&self.queue_key(dest), &stored) {
                        tracing::error!(queue = %dest, error = %e, "cannot store moved message");
                    }
                }
            }
            next += 1;
            moved += 1;
            let mut one = vec![qm];
            forget(
                src_durable,
                (&key.vhost, source),
                &mut one,
                None,
                false,
                ctx,
            );
        }
        let touched = self.process_dead_letters(work, ctx);
        for q in dests.iter().chain(&touched) {
            self.dispatch(q, ctx);
        }
        Ok(moved)
    }

    /// A connection closed: delete its exclusive queues.
    pub fn connection_closed(&mut self, conn_id: u64, ctx: Ctx<'_>) {
        let owned: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| q.exclusive_owner == Some(conn_id))
            .map(|(n, _)| n.clone())
            .collect();
        for n in owned {
            self.remove_queue(&n, ctx);
        }
    }
}

/// `msgs` leave a queue for good (acked, expired, dropped by overflow, rejected): settle
/// them in the store (persistent messages of a durable queue, except `unstored`, the id of a
/// message that was never appended). When they are to be dead-lettered (`dead_letter`),
/// bodies paged out to the store are read back first, since the store forgets them once
/// settled; a message whose body cannot be read is dropped (logged) rather than
/// dead-lettered empty.
/// `queue` of `vhost` names the store's queue; the key is only built when the store is
/// involved (this runs for every ack).
fn forget(
    durable: bool,
    (vhost, queue): (&str, &str),
    msgs: &mut Vec<QueuedMessage>,
    unstored: Option<u64>,
    dead_letter: bool,
    ctx: Ctx<'_>,
) {
    let stored = |m: &QueuedMessage| m.msg.persistent() && Some(m.id) != unstored;
    let page_in_first = dead_letter && msgs.iter().any(|m| m.paged.is_some());
    let settle = durable && msgs.iter().any(stored);
    if !page_in_first && !settle {
        return;
    }
    let key = QueueKey {
        vhost: vhost.to_owned(),
        queue: queue.to_owned(),
    };
    if page_in_first {
        msgs.retain_mut(|m| m.paged.is_none() || page_in(&key, m, ctx));
    }
    if settle {
        for m in msgs.iter().filter(|m| stored(m)) {
            let _ = ctx.store.ack(&key, m.id);
        }
    }
}

/// Read the body of paged-out `qm` back from the store (accounted on the memory gauge);
/// false if it cannot be read (logged; the store entry is then settled).
fn page_in(key: &QueueKey, qm: &mut QueuedMessage, ctx: Ctx<'_>) -> bool {
    let why = match ctx.store.read(key, qm.id) {
        Ok(Some(m)) => match Message::from_stored(m) {
            Some(mut msg) => {
                msg.mem = Some(MemTicket::new(ctx.memory, msg.body.len() as u64));
                qm.msg = Arc::new(msg);
                qm.paged = None;
                return true;
            }
            None => "unreadable stored properties".to_owned(),
        },
        Ok(None) => "missing from the store".to_owned(),
        Err(e) => e.to_string(),
    };
    tracing::error!(
        queue = %key.queue,
        id = qm.id,
        error = %why,
        "paged-out message cannot be read back; dropped instead of dead-lettered"
    );
    let _ = ctx.store.ack(key, qm.id);
    false
}

/// RabbitMQ's dead-letter cycle rule: with `deaths` the `x-death` history (newest first,
/// including the death being processed), dead-lettering into `queue` closes a cycle if the
/// message already died in `queue` and no death since then (that one included) was a
/// rejection. An entry that is not a table was put there by a client, so the cycle is not
/// "fully automatic" either.
fn is_dead_letter_cycle(queue: &str, deaths: &[AMQPValue]) -> bool {
    for d in deaths {
        let Some(t) = d.as_field_table() else {
            return false;
        };
        if t.inner().get("reason").and_then(value_as_str).as_deref() == Some("rejected") {
            return false;
        }
        if t.inner().get("queue").and_then(value_as_str).as_deref() == Some(queue) {
            return true;
        }
    }
    false
}

/// Build the dead-lettered copy of a message with RabbitMQ's `x-death` header.
fn dead_lettered(
    msg: &Message,
    queue: &str,
    reason: &str,
    dlx: &str,
    dlrk: Option<&str>,
) -> Message {
    let mut props: AMQPProperties = msg.properties.clone();
    let mut headers = props.headers().clone().unwrap_or_default();
    let original_expiration = props.expiration().clone();
    let mut deaths: Vec<AMQPValue> = headers
        .inner()
        .get("x-death")
        .and_then(|v| v.as_array())
        .map(|a| a.as_slice().to_vec())
        .unwrap_or_default();
    let same = |t: &FieldTable| {
        t.inner().get("queue").and_then(value_as_str).as_deref() == Some(queue)
            && t.inner().get("reason").and_then(value_as_str).as_deref() == Some(reason)
    };
    let mut count = 1i64;
    if let Some(pos) = deaths
        .iter()
        .position(|v| v.as_field_table().is_some_and(same))
    {
        if let Some(t) = deaths.remove(pos).as_field_table() {
            count = t.inner().get("count").and_then(value_as_i64).unwrap_or(0) + 1;
        }
    }
    let mut entry = FieldTable::default();
    entry.insert("count".into(), AMQPValue::LongLongInt(count));
    entry.insert("reason".into(), long_str(reason));
    entry.insert("queue".into(), long_str(queue));
    entry.insert("time".into(), AMQPValue::Timestamp(now_secs()));
    entry.insert("exchange".into(), long_str(&msg.exchange));
    entry.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![long_str(&msg.routing_key)])),
    );
    if let Some(exp) = &original_expiration {
        entry.insert("original-expiration".into(), long_str(exp.as_str()));
    }
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    for (k, v) in [
        ("reason", reason),
        ("queue", queue),
        ("exchange", msg.exchange.as_str()),
    ] {
        let first = format!("x-first-death-{k}");
        if !headers.contains_key(&first) {
            headers.insert(first.into(), long_str(v));
        }
        headers.insert(format!("x-last-death-{k}").into(), long_str(v));
    }
    props = props.with_headers(headers);
    if original_expiration.is_some() {
        // AMQPProperties has no "unset"; rebuild without expiration
        props = without_expiration(&props);
    }
    let raw = encode_properties(&props);
    Message {
        exchange: dlx.to_owned(),
        routing_key: dlrk
            .map(str::to_owned)
            .unwrap_or_else(|| msg.routing_key.clone()),
        properties: props,
        raw_properties: raw,
        body: msg.body.clone(),
        mem: msg.mem.as_ref().map(|t| t.renew()),
    }
}

fn without_expiration(p: &AMQPProperties) -> AMQPProperties {
    let mut n = AMQPProperties::default();
    macro_rules! copy {
        ($get:ident, $set:ident) => {
            if let Some(v) = p.$get().clone() {
                n = n.$set(v);
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(headers, with_headers);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(user_id, with_user_id);
    copy!(app_id, with_app_id);
    copy!(cluster_id, with_cluster_id);
    n
}
