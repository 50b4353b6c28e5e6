//! Messages waiting for their next attempt, and the keys they hold back.
//!
//! When an attempt fails and the retry policy allows another, the worker
//! does not sleep: it *parks* the message with the time of its next
//! attempt and goes on with other deliveries. For a key-ordered group the
//! message's key is parked with it — later deliveries of that key queue
//! behind it here (in arrival order) — so one failing key holds back only
//! itself. Unkeyed (or unordered) messages are parked on their own.
//!
//! Parked messages stay unacked at the transport (they count against the
//! subscription's prefetch); a worker that stops hands them back
//! (nack + requeue), so nothing parked is lost.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use tokio::time::Instant;

use crate::transport::{Delivery, DeliveryAcker};
use crate::Context;

/// A parked message: the context of its next attempt and its acker.
pub(super) struct Retry {
    pub(super) cx: Context,
    pub(super) acker: DeliveryAcker,
}

struct Entry {
    key: Option<String>,
    head: Retry,
    /// Later deliveries of the same key, in arrival order.
    backlog: VecDeque<Delivery>,
}

/// The parked messages of one worker (owned by it; no locks).
#[derive(Default)]
pub(super) struct Parking {
    entries: HashMap<u64, Entry>,
    /// Parked keys (key-ordered groups only) → entry.
    keys: HashMap<String, u64>,
    /// Due times, earliest first; entries are never re-armed under the
    /// same id, so no stale timers exist.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
}

impl Parking {
    /// Nothing is parked (the common case: one branch per delivery).
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parks `retry` until `due`. With `key`, later deliveries of the key
    /// wait behind it (`backlog` holds those already waiting).
    pub(super) fn park(
        &mut self,
        key: Option<String>,
        retry: Retry,
        due: Instant,
        backlog: VecDeque<Delivery>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(k) = &key {
            self.keys.insert(k.clone(), id);
        }
        self.entries.insert(
            id,
            Entry {
                key,
                head: retry,
                backlog,
            },
        );
        self.timers.push(Reverse((due, id)));
    }

    /// Queues `delivery` behind its parked key; gives it back if its key is
    /// not parked.
    pub(super) fn defer(&mut self, delivery: Delivery) -> Result<(), Delivery> {
        let id = match delivery.envelope.key.as_deref() {
            Some(k) => self.keys.get(k).copied(),
            None => None,
        };
        match id.and_then(|id| self.entries.get_mut(&id)) {
            Some(entry) => {
                entry.backlog.push_back(delivery);
                Ok(())
            }
            None => Err(delivery),
        }
    }

    /// When the earliest parked message is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((due, _))| *due)
    }

    /// Unparks the earliest message if it is due by `now`: its retry, its
    /// key and the deliveries that waited behind it.
    pub(super) fn take_due(
        &mut self,
        now: Instant,
    ) -> Option<(Option<String>, Retry, VecDeque<Delivery>)> {
        let Reverse((due, id)) = *self.timers.peek()?;
        if due > now {
            return None;
        }
        self.timers.pop();
        let entry = self.entries.remove(&id)?;
        if let Some(k) = &entry.key {
            self.keys.remove(k);
        }
        Some((entry.key, entry.head, entry.backlog))
    }

    /// Everything parked, in an order that keeps each key's order: per
    /// entry its head, then its backlog.
    pub(super) fn drain(&mut self) -> Vec<(Retry, VecDeque<Delivery>)> {
        self.keys.clear();
        self.timers.clear();
        let mut entries: Vec<_> = self.entries.drain().collect();
        entries.sort_by_key(|(id, _)| *id);
        entries
            .into_iter()
            .map(|(_, e)| (e.head, e.backlog))
            .collect()
    }
}
