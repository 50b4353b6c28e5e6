//! Monotonic counters the management API and `/metrics` read: per queue, per vhost, per
//! connection and channel. Updated on the hot path with relaxed atomics only; rates are
//! derived elsewhere by sampling them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Message counters of one queue (RabbitMQ's queue `message_stats`).
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Messages that entered the queue (published or dead-lettered into it).
    pub publish: AtomicU64,
    /// Deliveries to consumers in manual-ack mode.
    pub deliver: AtomicU64,
    /// Deliveries to no-ack consumers.
    pub deliver_no_ack: AtomicU64,
    /// `basic.get` in manual-ack mode.
    pub get: AtomicU64,
    /// `basic.get` in no-ack mode.
    pub get_no_ack: AtomicU64,
    /// `basic.get` on an empty queue.
    pub get_empty: AtomicU64,
    /// Deliveries (or gets) of messages delivered before.
    pub redeliver: AtomicU64,
    /// Acknowledged deliveries.
    pub ack: AtomicU64,
}

/// A plain copy of [`QueueCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// See [`QueueCounters::publish`].
    pub publish: u64,
    /// See [`QueueCounters::deliver`].
    pub deliver: u64,
    /// See [`QueueCounters::deliver_no_ack`].
    pub deliver_no_ack: u64,
    /// See [`QueueCounters::get`].
    pub get: u64,
    /// See [`QueueCounters::get_no_ack`].
    pub get_no_ack: u64,
    /// See [`QueueCounters::get_empty`].
    pub get_empty: u64,
    /// See [`QueueCounters::redeliver`].
    pub redeliver: u64,
    /// See [`QueueCounters::ack`].
    pub ack: u64,
}

impl QueueCounts {
    /// Deliveries plus gets, as RabbitMQ's `deliver_get`.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }

    /// Field-wise sum.
    pub fn add(&mut self, o: &QueueCounts) {
        self.publish += o.publish;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.get_empty += o.get_empty;
        self.redeliver += o.redeliver;
        self.ack += o.ack;
    }
}

/// Add `n` to a counter.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl QueueCounters {
    /// Read every counter.
    pub fn load(&self) -> QueueCounts {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QueueCounts {
            publish: l(&self.publish),
            deliver: l(&self.deliver),
            deliver_no_ack: l(&self.deliver_no_ack),
            get: l(&self.get),
            get_no_ack: l(&self.get_no_ack),
            get_empty: l(&self.get_empty),
            redeliver: l(&self.redeliver),
            ack: l(&self.ack),
        }
    }

    /// Add a whole set of counts (a deleted queue's, kept by its vhost).
    pub fn absorb(&self, c: &QueueCounts) {
        bump(&self.publish, c.publish);
        bump(&self.deliver, c.deliver);
        bump(&self.deliver_no_ack, c.deliver_no_ack);
        bump(&self.get, c.get);
        bump(&self.get_no_ack, c.get_no_ack);
        bump(&self.get_empty, c.get_empty);
        bump(&self.redeliver, c.redeliver);
        bump(&self.ack, c.ack);
    }
}

/// Counters of one vhost. Its delivery/ack totals are the sum of its queues' counters plus
/// `retired` (what deleted queues had counted), so they never go backwards.
#[derive(Debug, Default)]
pub struct VhostCounters {
    /// Messages published by clients (AMQP or the management API) to its exchanges.
    pub publish: AtomicU64,
    /// Publisher confirms sent.
    pub confirm: AtomicU64,
    /// Mandatory messages returned as unroutable.
    pub return_unroutable: AtomicU64,
    /// Non-mandatory messages dropped as unroutable.
    pub drop_unroutable: AtomicU64,
    /// Counters of queues deleted since the vhost was created.
    pub retired: QueueCounters,
}

/// What the management API shows about a live connection. Owned by the connection task,
/// shared with the core's connection table.
#[derive(Debug)]
pub struct ConnInfo {
    /// RabbitMQ-style name: `"peer -> local"`.
    pub name: String,
    /// Local (server) address.
    pub local: String,
    /// Opened at, ms since the Unix epoch.
    pub connected_at_ms: u64,
    /// Client properties as reported (product, version, platform, connection_name...).
    pub client_properties: BTreeMap<String, String>,
    /// Negotiated channel_max.
    pub channel_max: u16,
    /// Negotiated frame_max.
    pub frame_max: u32,
    /// Negotiated heartbeat (s).
    pub heartbeat: u16,
    /// Bytes received.
    pub recv_oct: AtomicU64,
    /// Bytes sent.
    pub send_oct: AtomicU64,
    /// Reads paused by a resource alarm.
    pub blocked: AtomicBool,
    /// Open channels.
    pub channels: Mutex<BTreeMap<u16, Arc<ChannelInfo>>>,
}

impl ConnInfo {
    /// Lock the channel table (poison-tolerant).
    pub fn channels(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, Arc<ChannelInfo>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the management API shows about an open channel (published by the channel after
/// each method it handles).
#[derive(Debug, Default)]
pub struct ChannelInfo {
    /// Per-consumer prefetch (basic.qos global=false).
    pub prefetch: AtomicU32,
    /// Channel-wide prefetch (basic.qos global=true).
    pub global_prefetch: AtomicU32,
    /// Confirm mode.
    pub confirm: AtomicBool,
    /// Transactional.
    pub transactional: AtomicBool,
    /// Unsettled deliveries.
    pub unacked: AtomicU32,
    /// Consumers on the channel.
    pub consumers: AtomicU32,
    /// Messages published on the channel.
    pub publish: AtomicU64,
}
