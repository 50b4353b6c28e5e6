//! Plain copies of broker state taken under the state lock (no JSON, no rendering) and the
//! counter samples the rate sampler compares.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use amq_protocol::types::FieldTable;

use crate::model::exchange::Dest;
use crate::model::message::unix_ms;
use crate::model::stats::{ConnInfo, QueueCounts};
use crate::model::{Core, State};

/// Which vhosts a snapshot covers.
#[derive(Debug, Clone)]
pub enum Vhosts {
    /// Every vhost.
    All,
    /// These only.
    Only(BTreeSet<String>),
}

impl Vhosts {
    fn has(&self, v: &str) -> bool {
        match self {
            Vhosts::All => true,
            Vhosts::Only(s) => s.contains(v),
        }
    }
}

/// A consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSnap {
    pub tag: String,
    pub conn_id: u64,
    pub channel: u16,
    pub ack_required: bool,
    pub exclusive: bool,
    pub prefetch: u32,
    pub priority: i64,
}

/// A queue.
#[derive(Debug, Clone)]
pub struct QueueSnap {
    pub vhost: Arc<str>,
    pub name: Arc<str>,
    pub durable: bool,
    pub auto_delete: bool,
    pub owner: Option<u64>,
    pub arguments: FieldTable,
    pub ready: usize,
    pub ready_bytes: usize,
    pub unacked: usize,
    pub consumers: Vec<ConsumerSnap>,
    pub counts: QueueCounts,
    pub idle_since_ms: u64,
    pub single_active: bool,
}

/// An exchange.
#[derive(Debug, Clone)]
pub struct ExchangeSnap {
    pub vhost: String,
    pub name: String,
    pub kind: &'static str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// A binding (the default exchange's implicit bindings included, as RabbitMQ lists them).
#[derive(Debug, Clone)]
pub struct BindingSnap {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub destination_is_queue: bool,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// A vhost with its totals.
#[derive(Debug, Clone, Default)]
pub struct VhostSnap {
    pub name: String,
    pub ready: u64,
    pub unacked: u64,
    pub ready_bytes: u64,
    pub queues: u64,
    pub exchanges: u64,
    pub consumers: u64,
    /// Queue counters summed (deleted queues included).
    pub counts: QueueCounts,
    pub publish: u64,
    pub confirm: u64,
    pub return_unroutable: u64,
    pub drop_unroutable: u64,
}

/// A live connection.
#[derive(Debug, Clone)]
pub struct ConnSnap {
    pub id: u64,
    pub user: String,
    pub vhost: String,
    pub peer: String,
    pub info: Arc<ConnInfo>,
}

/// Vhost names `user` has permissions on.
pub fn permitted_vhosts(st: &State, user: &str) -> BTreeSet<String> {
    st.permissions
        .keys()
        .filter(|(u, _)| u == user)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Queues of the selected vhosts (all of them when `name` is `None`).
pub fn queues(core: &Core, vhosts: &Vhosts, name: Option<&str>) -> Vec<QueueSnap> {
    let now_ms = unix_ms();
    let now = Instant::now();
    let st = core.lock();
    let mut out = Vec::new();
    for vh in st.vhosts.values().filter(|v| vhosts.has(&v.name)) {
        let vname: Arc<str> = vh.name.as_str().into();
        let mut push = |q: &crate::model::Queue| {
            out.push(QueueSnap {
                vhost: vname.clone(),
                name: q.name.clone(),
                durable: q.durable,
                auto_delete: q.auto_delete,
                owner: q.exclusive_owner,
                arguments: q.arguments.clone(),
                ready: q.len(),
                ready_bytes: q.ready_bytes(),
                unacked: q.unacked,
                consumers: q
                    .consumers
                    .iter()
                    .map(|c| ConsumerSnap {
                        tag: c.tag.to_string(),
                        conn_id: c.conn_id,
                        channel: c.channel,
                        ack_required: !c.no_ack,
                        exclusive: c.exclusive,
                        prefetch: if c.no_ack {
                            0
                        } else {
                            c.credit.limit.load(Relaxed)
                        },
                        priority: c.priority,
                    })
                    .collect(),
                counts: q.stats.load(),
                idle_since_ms: now_ms
                    .saturating_sub(now.duration_since(q.last_used).as_millis() as u64),
                single_active: q.args.single_active,
            })
        };
        match name {
            Some(n) => {
                if let Some(q) = vh.queues.get(n) {
                    push(q);
                }
            }
            None => vh.queues.values().for_each(&mut push),
        }
    }
    drop(st);
    out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    out
}

/// Exchanges of the selected vhosts.
pub fn exchanges(core: &Core, vhosts: &Vhosts, name: Option<&str>) -> Vec<ExchangeSnap> {
    let st = core.lock();
    let mut out = Vec::new();
    for vh in st.vhosts.values().filter(|v| vhosts.has(&v.name)) {
        for e in vh.exchanges.values() {
            if name.is_some_and(|n| n != e.name) {
                continue;
            }
            out.push(ExchangeSnap {
                vhost: vh.name.clone(),
                name: e.name.clone(),
                kind: e.kind.name(),
                durable: e.durable,
                auto_delete: e.auto_delete,
                internal: e.internal,
                arguments: e.arguments.clone(),
            });
        }
    }
    drop(st);
    out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    out
}

/// Bindings of the selected vhosts, the default exchange's implicit ones first per vhost.
pub fn bindings(core: &Core, vhosts: &Vhosts) -> Vec<BindingSnap> {
    let st = core.lock();
    let mut out = Vec::new();
    for vh in st.vhosts.values().filter(|v| vhosts.has(&v.name)) {
        let mut qs: Vec<&String> = vh.queues.keys().collect();
        qs.sort();
        for q in qs {
            out.push(BindingSnap {
                vhost: vh.name.clone(),
                source: String::new(),
                destination: q.clone(),
                destination_is_queue: true,
                routing_key: q.clone(),
                arguments: FieldTable::default(),
            });
        }
        let mut xs: Vec<&crate::model::Exchange> = vh.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for e in xs {
            for b in &e.bindings {
                out.push(BindingSnap {
                    vhost: vh.name.clone(),
                    source: e.name.clone(),
                    destination: b.dest.name().to_owned(),
                    destination_is_queue: matches!(b.dest, Dest::Queue(_)),
                    routing_key: b.key.clone(),
                    arguments: b.args.clone(),
                });
            }
        }
    }
    out
}

/// Vhosts with their totals.
pub fn vhosts(core: &Core, vhosts: &Vhosts) -> Vec<VhostSnap> {
    let st = core.lock();
    st.vhosts
        .values()
        .filter(|v| vhosts.has(&v.name))
        .map(|vh| {
            let mut s = VhostSnap {
                name: vh.name.clone(),
                exchanges: vh.exchanges.len() as u64,
                queues: vh.queues.len() as u64,
                counts: vh.stats.retired.load(),
                publish: vh.stats.publish.load(Relaxed),
                confirm: vh.stats.confirm.load(Relaxed),
                return_unroutable: vh.stats.return_unroutable.load(Relaxed),
                drop_unroutable: vh.stats.drop_unroutable.load(Relaxed),
                ..Default::default()
            };
            for q in vh.queues.values() {
                s.ready += q.len() as u64;
                s.ready_bytes += q.ready_bytes() as u64;
                s.unacked += q.unacked as u64;
                s.consumers += q.consumers.len() as u64;
                s.counts.add(&q.stats.load());
            }
            s
        })
        .collect()
}

/// Live connections (the connection table has its own lock, not the state lock).
pub fn connections(core: &Core) -> Vec<ConnSnap> {
    let mut v: Vec<ConnSnap> = core
        .conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(id, c)| ConnSnap {
            id: *id,
            user: c.user.clone(),
            vhost: c.vhost.clone(),
            peer: c.peer.clone(),
            info: c.info.clone(),
        })
        .collect();
    v.sort_by_key(|c| c.id);
    v
}

// ===== rates =====

/// Counter fields sampled for rates, in this order.
pub const FIELDS: [&str; 15] = [
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "get_empty",
    "redeliver",
    "ack",
    "deliver_get",
    "confirm",
    "return_unroutable",
    "drop_unroutable",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
];

/// Values of [`FIELDS`].
pub type Values = [u64; FIELDS.len()];

/// The values of a queue's counters and gauges.
pub fn queue_values(c: &QueueCounts, ready: u64, unacked: u64) -> Values {
    [
        c.publish,
        c.deliver,
        c.deliver_no_ack,
        c.get,
        c.get_no_ack,
        c.get_empty,
        c.redeliver,
        c.ack,
        c.deliver_get(),
        0,
        0,
        0,
        ready + unacked,
        ready,
        unacked,
    ]
}

/// The values of a vhost (`publish` is what clients published to its exchanges).
pub fn vhost_values(v: &VhostSnap) -> Values {
    let mut x = queue_values(&v.counts, v.ready, v.unacked);
    x[0] = v.publish;
    x[9] = v.confirm;
    x[10] = v.return_unroutable;
    x[11] = v.drop_unroutable;
    x
}

/// One reading of every counter.
#[derive(Debug)]
pub struct Sample {
    at: Instant,
    queues: HashMap<(String, String), Values>,
    vhosts: HashMap<String, Values>,
}

/// Read every counter (one pass under the lock).
pub fn sample(core: &Core) -> Sample {
    // under the lock only cheap copies (shared names, counter loads); maps built after
    let st = core.lock();
    let mut read: Vec<(Arc<str>, Arc<str>, Values)> = Vec::new();
    for vh in st.vhosts.values() {
        let vname: Arc<str> = vh.name.as_str().into();
        for q in vh.queues.values() {
            read.push((
                vname.clone(),
                q.name.clone(),
                queue_values(&q.stats.load(), q.len() as u64, q.unacked as u64),
            ));
        }
    }
    drop(st);
    let queues = read
        .into_iter()
        .map(|(v, q, x)| ((v.to_string(), q.to_string()), x))
        .collect();
    let vhosts = vhosts(core, &Vhosts::All)
        .iter()
        .map(|v| (v.name.clone(), vhost_values(v)))
        .collect();
    Sample {
        at: Instant::now(),
        queues,
        vhosts,
    }
}

/// Per-second rates of [`FIELDS`] between the last two samples.
#[derive(Debug, Default)]
pub struct Rates {
    /// By vhost, then queue name (looked up by `&str`, no allocation per queue).
    queues: HashMap<String, HashMap<String, [f64; FIELDS.len()]>>,
    vhosts: HashMap<String, [f64; FIELDS.len()]>,
}

fn diff(a: &Values, b: &Values, secs: f64) -> [f64; FIELDS.len()] {
    std::array::from_fn(|i| {
        let d = b[i] as f64 - a[i] as f64;
        // counters never go back; gauges may (messages_*)
        if i < 12 && d < 0.0 {
            0.0
        } else {
            (d / secs * 10.0).round() / 10.0
        }
    })
}

impl Rates {
    /// Rates from `prev` to `cur`.
    pub fn between(prev: &Sample, cur: &Sample) -> Rates {
        let secs = cur.at.duration_since(prev.at).as_secs_f64().max(0.001);
        Rates {
            queues: {
                let mut m: HashMap<String, HashMap<String, [f64; FIELDS.len()]>> = HashMap::new();
                for ((vh, q), v) in &cur.queues {
                    if let Some(p) = prev.queues.get(&(vh.clone(), q.clone())) {
                        m.entry(vh.clone())
                            .or_default()
                            .insert(q.clone(), diff(p, v, secs));
                    }
                }
                m
            },
            vhosts: cur
                .vhosts
                .iter()
                .filter_map(|(k, v)| prev.vhosts.get(k).map(|p| (k.clone(), diff(p, v, secs))))
                .collect(),
        }
    }

    /// Rates of a queue (zeros when unknown yet).
    pub fn queue(&self, vhost: &str, name: &str) -> [f64; FIELDS.len()] {
        self.queues
            .get(vhost)
            .and_then(|m| m.get(name))
            .copied()
            .unwrap_or_default()
    }

    /// Rates of a vhost.
    pub fn vhost(&self, vhost: &str) -> [f64; FIELDS.len()] {
        self.vhosts.get(vhost).copied().unwrap_or_default()
    }

    /// Rates over all vhosts.
    pub fn total(&self) -> [f64; FIELDS.len()] {
        let mut t = [0.0; FIELDS.len()];
        for v in self.vhosts.values() {
            for (a, b) in t.iter_mut().zip(v) {
                *a += b;
            }
        }
        t
    }
}
