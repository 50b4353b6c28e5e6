//! Broker state: vhosts, users and permissions behind one lock, plus the message store and the
//! definitions file. Knows nothing about frames or sockets; connections talk to it through
//! [`Core`] methods and receive [`Notify`] messages.
//!
//! ### Invariants
//! - The state lock is never held across an `.await`.
//! - Any change to a durable definition is written to the definitions file before the lock
//!   is released (so a `*-ok` reply implies the definition is on disk).

pub mod exchange;
pub mod message;
pub mod queue;
pub mod stats;
pub mod vhost;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

pub use exchange::{Dest, Exchange, ExchangeKind};
use message::MemTicket;
pub use message::{Message, QueuedMessage};
pub use queue::{Consumer, Credit, Delivery, Notify, Queue};
pub use vhost::{Ctx, PublishOutcome, VHost};

use crate::auth::{Permission, User};
use crate::error::{Error, Result};
use crate::storage::definitions::{BindingDef, ExchangeDef, QueueDef, VhostDef};
use crate::storage::{DefinitionStore, Definitions, MessageStore, QueueKey, StoredMessage};

/// All mutable broker state.
#[derive(Debug, Default)]
pub struct State {
    /// Vhosts by name.
    pub vhosts: BTreeMap<String, VHost>,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Permissions by (user, vhost).
    pub permissions: BTreeMap<(String, String), Permission>,
}

/// A live connection, as the model sees it.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Where to send notifications.
    pub tx: UnboundedSender<Notify>,
    /// Authenticated user.
    pub user: String,
    /// Peer address.
    pub peer: String,
    /// Vhost the connection is open on.
    pub vhost: String,
    /// Details and counters for the management API.
    pub info: Arc<stats::ConnInfo>,
}

/// The shared core of a broker.
#[derive(Debug)]
pub struct Core {
    state: Mutex<State>,
    /// Message store.
    pub store: Arc<dyn MessageStore>,
    defs: DefinitionStore,
    next_conn: AtomicU64,
    /// Live connections.
    pub conns: Mutex<HashMap<u64, ConnHandle>>,
    /// Bytes of message bodies held by the broker (for the memory watermark).
    pub memory: Arc<message::MemoryGauge>,
    /// Page persistent bodies of durable queues out once `memory` exceeds this (bytes;
    /// `u64::MAX` never). Only effective with a store that can [`MessageStore::read`].
    page_out_above: AtomicU64,
    /// Free bytes required on the data directory's filesystem (0 = no check).
    disk_free_limit: AtomicU64,
    /// Free space is below `disk_free_limit`: publishers are blocked.
    disk_alarm: AtomicBool,
    /// Store-sync latency histogram (set once the management listener runs).
    sync_latency:
        std::sync::OnceLock<(crate::management::metrics::SyncLatency, metrics::Histogram)>,
}

impl Core {
    /// Open the data directory: load definitions, or create the defaults (vhost `/`, user
    /// `guest`/`guest` as administrator) on first start.
    ///
    /// # Errors
    /// I/O or parse errors of the definitions file.
    pub fn open(data_dir: &Path, store: Arc<dyn MessageStore>) -> Result<Self> {
        let defs = DefinitionStore::open(data_dir)?;
        let core = Self {
            state: Mutex::new(State::default()),
            store,
            defs,
            next_conn: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            memory: Arc::default(),
            page_out_above: AtomicU64::new(u64::MAX),
            disk_free_limit: AtomicU64::new(0),
            disk_alarm: AtomicBool::new(false),
            sync_latency: std::sync::OnceLock::new(),
        };
        match core.defs.load().map_err(Error::Definitions)? {
            Some(d) => {
                core.restore(d);
                core.recover_messages()?;
            }
            None => {
                let mut st = core.lock();
                st.vhosts.insert("/".into(), VHost::new("/"));
                st.users.insert(
                    "guest".into(),
                    User::new("guest", "guest", vec!["administrator".into()]),
                );
                let p = Permission::new("guest", "/", ".*", ".*", ".*").map_err(Error::Admin)?;
                st.permissions.insert(("guest".into(), "/".into()), p);
                core.persist(&st)?;
            }
        }
        Ok(core)
    }

    /// Re-queues the persistent messages the store kept for durable queues;
    /// drops what the store holds for queues that no longer exist.
    ///
    /// Lazy: only the store's index is loaded (ids, sizes, enqueue times and TTLs); bodies
    /// stay on disk and are paged in on delivery (or when dead-lettered). Priority queues,
    /// which need each message's priority to order it, read their messages eagerly.
    ///
    /// Message TTLs are re-applied from the original enqueue time: a message whose TTL ran
    /// out while the broker was down expires (and is dead-lettered) at the first sweep.
    fn recover_messages(&self) -> Result<()> {
        let io = |e| Error::Io(std::io::Error::other(e));
        let recovered = self.store.recover_index().map_err(io)?;
        let lazy = self.store.kind() == crate::storage::StorageType::File;
        let (now, now_ms) = (Instant::now(), message::unix_ms());
        let mut st = self.lock();
        let mut total = 0usize;
        for (key, entries) in recovered {
            let queue = st
                .vhosts
                .get_mut(&key.vhost)
                .and_then(|vh| vh.queues.get_mut(&key.queue))
                .filter(|q| q.durable);
            let Some(queue) = queue else {
                let _ = self.store.drop_queue(&key);
                continue;
            };
            let eager = !lazy || queue.args.max_priority.is_some();
            for e in entries {
                let expires_at = queue.recovered_expiry(e.meta, now, now_ms);
                if !eager {
                    queue.restore_paged(e.id, e.size, expires_at);
                    total += 1;
                    continue;
                }
                let Some(m) = self.store.read(&key, e.id).map_err(io)? else {
                    continue;
                };
                let Some(msg) = self.stored_to_message(&key, m, true) else {
                    continue;
                };
                queue.restore(e.id, msg, expires_at);
                total += 1;
            }
        }
        if total > 0 {
            tracing::info!(messages = total, "recovered persistent messages");
        }
        Ok(())
    }

    /// Build a model message from a stored one (`None`, and the store entry acked, if its
    /// properties do not parse). `account` puts the body on the memory gauge.
    fn stored_to_message(
        &self,
        key: &QueueKey,
        m: StoredMessage,
        account: bool,
    ) -> Option<Arc<Message>> {
        let id = m.id;
        let Some(mut msg) = Message::from_stored(m) else {
            tracing::warn!(queue = %key.queue, id, "unreadable stored properties; dropping message");
            let _ = self.store.ack(key, id);
            return None;
        };
        if account {
            msg.mem = Some(MemTicket::new(&self.memory, msg.body.len() as u64));
        }
        Some(Arc::new(msg))
    }

    /// The full message for delivering `qm` from `queue`: `qm.msg` itself, or, for a message
    /// paged out, the message read back from the store (not accounted on the memory gauge:
    /// it lives only until it is written to the socket). `None` if the store no longer
    /// holds it or cannot read it (logged).
    pub fn page_in(&self, vhost: &str, queue: &str, qm: &QueuedMessage) -> Option<Arc<Message>> {
        if qm.paged.is_none() {
            return Some(qm.msg.clone());
        }
        let key = QueueKey {
            vhost: vhost.to_owned(),
            queue: queue.to_owned(),
        };
        match self.store.read(&key, qm.id) {
            Ok(Some(m)) => self.stored_to_message(&key, m, false),
            Ok(None) => {
                tracing::error!(
                    queue,
                    id = qm.id,
                    "paged-out message missing from the store"
                );
                None
            }
            Err(e) => {
                tracing::error!(queue, id = qm.id, error = %e, "cannot read paged-out message");
                None
            }
        }
    }

    /// Page bodies out once the memory gauge exceeds `bytes` (`u64::MAX`: never). Ignored
    /// for stores that cannot read messages back.
    pub fn set_page_out_above(&self, bytes: u64) {
        self.page_out_above.store(bytes, Ordering::Relaxed);
    }

    fn should_page_out(&self) -> bool {
        let above = self.page_out_above.load(Ordering::Relaxed);
        above != u64::MAX
            && self.memory.used() >= above
            && self.store.kind() == crate::storage::StorageType::File
    }

    /// Require `bytes` free on the data directory's filesystem (0 = no check); takes effect
    /// at the next disk check.
    pub fn set_disk_free_limit(&self, bytes: u64) {
        self.disk_free_limit.store(bytes, Ordering::Relaxed);
    }

    /// The current disk free limit.
    pub fn disk_free_limit(&self) -> u64 {
        self.disk_free_limit.load(Ordering::Relaxed)
    }

    /// Record whether free disk space is below the limit (publishers block while it is).
    pub fn set_disk_alarm(&self, on: bool) {
        if self.disk_alarm.swap(on, Ordering::Relaxed) != on {
            if on {
                tracing::warn!("free disk space below disk_free_limit; blocking publishers");
            } else {
                tracing::info!("free disk space above disk_free_limit again");
            }
        }
    }

    /// Start recording store-sync latencies (for `/metrics`).
    pub fn enable_sync_latency(&self) {
        let _ = self
            .sync_latency
            .get_or_init(crate::management::metrics::SyncLatency::new);
    }

    /// Record how long a batch waited for its store sync.
    pub fn record_sync_latency(&self, d: std::time::Duration) {
        if let Some((_, h)) = self.sync_latency.get() {
            h.record(d.as_secs_f64());
        }
    }

    /// The store-sync latency recorder, if enabled.
    pub fn sync_latency_recorder(&self) -> Option<&crate::management::metrics::SyncLatency> {
        self.sync_latency.get().map(|(r, _)| r)
    }

    /// Is free disk space below the limit?
    pub fn disk_alarm(&self) -> bool {
        self.disk_alarm.load(Ordering::Relaxed)
    }

    fn restore(&self, d: Definitions) {
        let mut st = self.lock();
        for v in d.vhosts {
            st.vhosts.insert(v.name.clone(), VHost::new(&v.name));
        }
        for u in d.users {
            st.users.insert(u.name.clone(), u);
        }
        for p in d.permissions {
            st.permissions.insert((p.user.clone(), p.vhost.clone()), p);
        }
        let now = Instant::now();
        for e in d.exchanges {
            if let Some(vh) = st.vhosts.get_mut(&e.vhost) {
                if let Err(err) = vh.declare_exchange(
                    &e.name,
                    &e.kind,
                    false,
                    true,
                    e.auto_delete,
                    e.internal,
                    e.arguments,
                ) {
                    tracing::warn!(exchange = %e.name, error = %err, "could not restore exchange");
                }
            }
        }
        for q in d.queues {
            if let Some(vh) = st.vhosts.get_mut(&q.vhost) {
                if let Err(err) = vh.declare_queue(
                    &q.name,
                    true,
                    false,
                    true,
                    false,
                    q.auto_delete,
                    q.arguments,
                    0,
                    now,
                ) {
                    tracing::warn!(queue = %q.name, error = %err, "could not restore queue");
                }
            }
        }
        for b in d.bindings {
            if let Some(vh) = st.vhosts.get_mut(&b.vhost) {
                let dest = if b.destination_type == "exchange" {
                    Dest::Exchange(b.destination)
                } else {
                    Dest::Queue(b.destination)
                };
                if let Err(err) = vh.bind(&b.source, dest, &b.routing_key, b.arguments, 0) {
                    tracing::warn!(error = %err, "could not restore binding");
                }
            }
        }
        for vh in st.vhosts.values_mut() {
            vh.dirty = false;
        }
    }

    /// Lock the state (poison-tolerant: a panic elsewhere must not wedge the broker).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshot durable definitions.
    pub fn definitions(st: &State) -> Definitions {
        let mut d = Definitions {
            users: st.users.values().cloned().collect(),
            vhosts: st
                .vhosts
                .keys()
                .map(|n| VhostDef { name: n.clone() })
                .collect(),
            permissions: st.permissions.values().cloned().collect(),
            ..Default::default()
        };
        for vh in st.vhosts.values() {
            let mut exchanges: Vec<&Exchange> = vh
                .exchanges
                .values()
                .filter(|e| e.durable && !e.name.is_empty() && !e.name.starts_with("amq."))
                .collect();
            exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            for e in exchanges {
                d.exchanges.push(ExchangeDef {
                    name: e.name.clone(),
                    vhost: vh.name.clone(),
                    kind: e.kind.name().into(),
                    durable: true,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: e.arguments.clone(),
                });
            }
            let mut queues: Vec<&Queue> = vh.queues.values().filter(|q| q.durable).collect();
            queues.sort_by(|a, b| a.name.cmp(&b.name));
            for q in queues {
                d.queues.push(QueueDef {
                    name: q.name.to_string(),
                    vhost: vh.name.clone(),
                    durable: true,
                    auto_delete: q.auto_delete,
                    arguments: q.arguments.clone(),
                });
            }
            let mut sources: Vec<&Exchange> = vh.exchanges.values().filter(|e| e.durable).collect();
            sources.sort_by(|a, b| a.name.cmp(&b.name));
            for e in sources {
                for b in &e.bindings {
                    let durable_dest = match &b.dest {
                        Dest::Queue(q) => vh.queues.get(q).is_some_and(|q| q.durable),
                        Dest::Exchange(x) => vh.exchanges.get(x).is_some_and(|x| x.durable),
                    };
                    if !durable_dest {
                        continue;
                    }
                    d.bindings.push(BindingDef {
                        source: e.name.clone(),
                        vhost: vh.name.clone(),
                        destination: b.dest.name().to_owned(),
                        destination_type: if matches!(b.dest, Dest::Queue(_)) {
                            "queue"
                        } else {
                            "exchange"
                        }
                        .into(),
                        routing_key: b.key.clone(),
                        arguments: b.args.clone(),
                    });
                }
            }
        }
        d
    }

    /// Write the definitions file from `st`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn persist(&self, st: &State) -> Result<()> {
        self.defs.save(&Self::definitions(st))?;
        Ok(())
    }

    /// Run `f` on a vhost under the lock; persists definitions if it changed a durable one.
    /// Returns `None` if the vhost does not exist.
    pub fn with_vhost<R>(
        &self,
        vhost: &str,
        f: impl FnOnce(&mut VHost, Ctx<'_>) -> R,
    ) -> Option<R> {
        let mut st = self.lock();
        let ctx = Ctx {
            store: &*self.store,
            now: Instant::now(),
            page_out: self.should_page_out(),
            memory: &self.memory,
        };
        let vh = st.vhosts.get_mut(vhost)?;
        let r = f(vh, ctx);
        if vh.dirty {
            vh.dirty = false;
            if let Err(e) = self.persist(&st) {
                tracing::error!(error = %e, "failed to persist definitions");
            }
        }
        Some(r)
    }

    /// Periodic housekeeping: TTL expiry and `x-expires`.
    pub fn sweep(&self) {
        let names: Vec<String> = self.lock().vhosts.keys().cloned().collect();
        for n in names {
            self.with_vhost(&n, |vh, ctx| vh.sweep(ctx));
        }
    }

    /// Check a user's password.
    pub fn authenticate(&self, user: &str, password: &str) -> Option<User> {
        let st = self.lock();
        st.users
            .get(user)
            .filter(|u| u.check_password(password))
            .cloned()
    }

    /// The permission of `user` on `vhost`, if any.
    pub fn permission(&self, user: &str, vhost: &str) -> Option<Permission> {
        self.lock()
            .permissions
            .get(&(user.to_owned(), vhost.to_owned()))
            .cloned()
    }

    /// Does the vhost exist?
    pub fn vhost_exists(&self, vhost: &str) -> bool {
        self.lock().vhosts.contains_key(vhost)
    }

    /// Allocate a connection id and register it.
    pub fn register_connection(&self, handle: ConnHandle) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, handle);
        id
    }

    /// Allocate a connection id without registering (before authentication).
    pub fn next_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Register a connection under an existing id.
    pub fn add_connection(&self, id: u64, handle: ConnHandle) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, handle);
    }

    /// Forget a connection and delete its exclusive queues.
    pub fn connection_closed(&self, id: u64, vhost: Option<&str>) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(v) = vhost {
            self.with_vhost(v, |vh, ctx| vh.connection_closed(id, ctx));
        }
    }

    /// Number of live (authenticated) connections.
    pub fn connection_count(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Ask the connections matching `pred` to close with `code`/`text`.
    pub fn close_where(&self, code: u16, text: &str, pred: impl Fn(&ConnHandle) -> bool) {
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            if pred(c) {
                let _ = c.tx.send(Notify::Close {
                    code,
                    text: text.to_owned(),
                });
            }
        }
    }

    /// Ask every connection to close with `code`/`text`.
    pub fn close_all(&self, code: u16, text: &str) {
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let _ = c.tx.send(Notify::Close {
                code,
                text: text.to_owned(),
            });
        }
    }

    // ===== administration =====

    fn mutate<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        let mut st = self.lock();
        let r = f(&mut st)?;
        self.persist(&st)?;
        Ok(r)
    }

    /// Create or update a user (password re-hashed, tags replaced).
    ///
    /// # Errors
    /// I/O errors persisting.
    pub fn put_user(&self, name: &str, password: &str, tags: Vec<String>) -> Result<()> {
        self.mutate(|st| {
            st.users
                .insert(name.to_owned(), User::new(name, password, tags));
            Ok(())
        })
    }

    /// Create or replace a user from a stored record (a definitions import: the hash is
    /// kept as is).
    ///
    /// # Errors
    /// I/O errors persisting.
    pub fn put_user_record(&self, user: User) -> Result<()> {
        self.mutate(|st| {
            st.users.insert(user.name.clone(), user);
            Ok(())
        })
    }

    /// Delete a user and its permissions.
    ///
    /// # Errors
    /// Unknown user, I/O errors.
    pub fn delete_user(&self, name: &str) -> Result<()> {
        self.mutate(|st| {
            st.users
                .remove(name)
                .ok_or_else(|| Error::Admin(format!("no such user '{name}'")))?;
            st.permissions.retain(|(u, _), _| u != name);
            Ok(())
        })?;
        self.close_where(320, &format!("user '{name}' is deleted"), |c| {
            c.user == name
        });
        Ok(())
    }

    /// Change a user's password.
    ///
    /// # Errors
    /// Unknown user, I/O errors.
    pub fn change_password(&self, name: &str, password: &str) -> Result<()> {
        self.mutate(|st| {
            let u = st
                .users
                .get_mut(name)
                .ok_or_else(|| Error::Admin(format!("no such user '{name}'")))?;
            *u = User::new(name, password, u.tags.clone());
            Ok(())
        })
    }

    /// Replace a user's tags.
    ///
    /// # Errors
    /// Unknown user, I/O errors.
    pub fn set_user_tags(&self, name: &str, tags: Vec<String>) -> Result<()> {
        self.mutate(|st| {
            st.users
                .get_mut(name)
                .ok_or_else(|| Error::Admin(format!("no such user '{name}'")))?
                .tags = tags;
            Ok(())
        })
    }

    /// Users (without hashes).
    pub fn users(&self) -> Vec<(String, Vec<String>)> {
        self.lock()
            .users
            .values()
            .map(|u| (u.name.clone(), u.tags.clone()))
            .collect()
    }

    /// Create a vhost (no-op if it exists).
    ///
    /// # Errors
    /// I/O errors.
    pub fn add_vhost(&self, name: &str) -> Result<()> {
        self.mutate(|st| {
            st.vhosts
                .entry(name.to_owned())
                .or_insert_with(|| VHost::new(name));
            Ok(())
        })
    }

    /// Delete a vhost with everything in it.
    ///
    /// # Errors
    /// Unknown vhost, I/O errors.
    pub fn delete_vhost(&self, name: &str) -> Result<()> {
        self.mutate(|st| {
            let mut vh = st
                .vhosts
                .remove(name)
                .ok_or_else(|| Error::Admin(format!("no such vhost '{name}'")))?;
            let ctx = Ctx {
                store: &*self.store,
                now: Instant::now(),
                page_out: false,
                memory: &self.memory,
            };
            let qs: Vec<String> = vh.queues.keys().cloned().collect();
            for q in qs {
                vh.remove_queue(&q, ctx);
            }
            st.permissions.retain(|(_, v), _| v != name);
            Ok(())
        })?;
        self.close_where(320, &format!("vhost '{name}' is deleted"), |c| {
            c.vhost == name
        });
        Ok(())
    }

    /// Vhost names.
    pub fn vhosts(&self) -> Vec<String> {
        self.lock().vhosts.keys().cloned().collect()
    }

    /// Set a user's permissions on a vhost.
    ///
    /// # Errors
    /// Unknown user/vhost, invalid regex, I/O errors.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<()> {
        self.mutate(|st| {
            if !st.users.contains_key(user) {
                return Err(Error::Admin(format!("no such user '{user}'")));
            }
            if !st.vhosts.contains_key(vhost) {
                return Err(Error::Admin(format!("no such vhost '{vhost}'")));
            }
            let p = Permission::new(user, vhost, configure, write, read).map_err(Error::Admin)?;
            st.permissions
                .insert((user.to_owned(), vhost.to_owned()), p);
            Ok(())
        })
    }

    /// Remove a user's permissions on a vhost.
    ///
    /// # Errors
    /// I/O errors.
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<()> {
        self.mutate(|st| {
            st.permissions.remove(&(user.to_owned(), vhost.to_owned()));
            Ok(())
        })
    }
}
