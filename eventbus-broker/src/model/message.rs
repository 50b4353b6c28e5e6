//! Messages as the model holds them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use amq_protocol::protocol::basic::AMQPProperties;
use bytes::Bytes;

/// An immutable published message, shared by every queue it was routed to.
#[derive(Debug)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Decoded properties (for routing, TTL, priority, dead-lettering).
    pub properties: AMQPProperties,
    /// Encoded properties, re-sent verbatim on delivery.
    pub raw_properties: Bytes,
    /// Body.
    pub body: Bytes,
    /// Accounts the body against the broker's memory gauge while the message is alive.
    pub mem: Option<MemTicket>,
}

impl Message {
    /// Rebuild a message read from the store (no memory ticket); `None` if its stored
    /// properties do not parse.
    pub fn from_stored(m: crate::storage::StoredMessage) -> Option<Message> {
        let Ok(([], properties)) =
            amq_protocol::protocol::basic::parse_properties(&m.raw_properties[..])
        else {
            return None;
        };
        Some(Message {
            exchange: m.exchange,
            routing_key: m.routing_key,
            properties,
            raw_properties: m.raw_properties,
            body: m.body,
            mem: None,
        })
    }

    /// Body size in bytes.
    pub fn size(&self) -> usize {
        self.body.len()
    }

    /// `delivery-mode = 2`.
    pub fn persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
    }

    /// Per-message TTL from the `expiration` property, in milliseconds.
    ///
    /// # Errors
    /// Returns the offending value if it is not a non-negative integer.
    pub fn expiration_ms(&self) -> Result<Option<u64>, String> {
        match self.properties.expiration() {
            None => Ok(None),
            Some(s) => s
                .as_str()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| s.as_str().to_owned()),
        }
    }
}

/// Wall-clock time in milliseconds since the Unix epoch (what the store records as a message's
/// enqueue time, so TTLs survive restarts).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The shared placeholder a [`QueuedMessage`] points to while its body is paged out to the
/// message store: no body, no memory ticket, and `delivery-mode = 2` (only persistent
/// messages are paged out, and the store must still be told when they are settled). The real
/// message is read back with [`MessageStore::read`](crate::storage::MessageStore::read) before
/// delivery.
pub fn paged_stub() -> Arc<Message> {
    static STUB: OnceLock<Arc<Message>> = OnceLock::new();
    STUB.get_or_init(|| {
        Arc::new(Message {
            exchange: String::new(),
            routing_key: String::new(),
            properties: AMQPProperties::default().with_delivery_mode(2),
            raw_properties: Bytes::new(),
            body: Bytes::new(),
            mem: None,
        })
    })
    .clone()
}

/// A message sitting in (or delivered from) a queue.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Per-queue sequence number: defines the original order.
    pub id: u64,
    /// The shared message.
    pub msg: Arc<Message>,
    /// Has it been delivered before?
    pub redelivered: bool,
    /// When it expires (queue or per-message TTL).
    pub expires_at: Option<Instant>,
    /// Effective priority (0 unless the queue has `x-max-priority`).
    pub priority: u8,
    /// `Some(size)` when the body is paged out: `msg` is then [`paged_stub`] and the message
    /// must be read back from the store (by queue and `id`) before delivery.
    pub paged: Option<u32>,
}

impl QueuedMessage {
    /// Body size in bytes (approximate for messages paged out at recovery: the stored record).
    pub fn size(&self) -> usize {
        match self.paged {
            Some(n) => n as usize,
            None => self.msg.size(),
        }
    }
}

/// Bytes of message bodies alive in the broker (queued, unacked, in transactions).
#[derive(Debug, Default)]
pub struct MemoryGauge {
    bytes: AtomicU64,
}

impl MemoryGauge {
    /// Bytes currently accounted.
    pub fn used(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Holds `size` bytes on a [`MemoryGauge`] until dropped.
#[derive(Debug)]
pub struct MemTicket {
    gauge: Arc<MemoryGauge>,
    size: u64,
}

impl MemTicket {
    /// Account `size` bytes.
    pub fn new(gauge: &Arc<MemoryGauge>, size: u64) -> Self {
        gauge.bytes.fetch_add(size, Ordering::Relaxed);
        Self {
            gauge: gauge.clone(),
            size,
        }
    }

    /// A second ticket of the same size on the same gauge (for derived messages).
    pub fn renew(&self) -> Self {
        Self::new(&self.gauge, self.size)
    }
}

impl Drop for MemTicket {
    fn drop(&mut self) {
        self.gauge.bytes.fetch_sub(self.size, Ordering::Relaxed);
    }
}
