//! Storage: where messages and definitions live.
//!
//! [`MessageStore`] is the seam for the durable segmented store (issue 4). The broker keeps the
//! ready/unacked state of each queue in memory and calls the store for every *persistent*
//! message routed to a *durable* queue: `append` when enqueued, `ack` when settled, and
//! `sync` before it confirms to a publisher. A file store implements `sync` with group commit
//! (one fsync for everything appended since the last one); [`MemoryStore`] completes at once.
//!
//! ### Invariants
//! - `append(q, id, …)` is called at most once per `(q, id)`, with `id` increasing per queue.
//! - `ack(q, id)` is only called for an id previously appended to `q`.
//! - After `sync()` resolves, every append/ack issued before the call survives a crash.
//! - `recover()` returns, per queue, the appended-but-not-acked messages in id order.
//! - A message routed to several durable queues is appended once with
//!   [`append_shared`](MessageStore::append_shared); each queue acks its own (queue, id)
//!   membership, and the record goes away only when every membership is settled.
//! - Every message carries [`MsgMeta`] (enqueue time, per-message TTL), returned by `read`,
//!   `recover` and `recover_index`, so TTLs are re-applied after a restart from the original
//!   enqueue time.

pub mod definitions;
pub mod file;
pub mod memory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub use definitions::{DefinitionStore, Definitions};
pub use file::{FileStore, FileStoreConfig};
pub use memory::MemoryStore;

/// Which message store backs the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// Messages live in memory only; persistent messages do not survive a restart.
    Memory,
    /// Persistent messages on durable queues also go to a segmented log on disk (the
    /// broker's default).
    #[default]
    File,
}

/// Identifies a queue in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueKey {
    /// Vhost name.
    pub vhost: String,
    /// Queue name.
    pub queue: String,
}

/// What the store keeps about a message besides its content, so the broker can re-apply
/// message TTLs after a restart without reading bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MsgMeta {
    /// When the message was enqueued (published, or dead-lettered into the queue), in
    /// milliseconds since the Unix epoch; 0 = unknown (records of store format 1).
    pub enqueued_at_ms: u64,
    /// The message's own TTL in milliseconds (its `expiration` property), if any. A queue's
    /// `x-message-ttl` is not stored: it is a property of the queue, applied on recovery.
    pub ttl_ms: Option<u64>,
}

/// A message as the store sees it: opaque encoded properties plus body.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Per-queue sequence number (defines order).
    pub id: u64,
    /// Exchange the message was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Encoded basic properties (flags + list).
    pub raw_properties: Bytes,
    /// Body.
    pub body: Bytes,
    /// Enqueue time and per-message TTL.
    pub meta: MsgMeta,
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O failure.
    #[error("store io: {0}")]
    Io(#[from] std::io::Error),
    /// The store was closed.
    #[error("store closed")]
    Closed,
    /// A record failed validation during recovery.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

/// One recovered message without its body: what a queue needs to keep in memory when bodies
/// are paged in lazily with [`MessageStore::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Per-queue sequence number.
    pub id: u64,
    /// Size of the stored record (properties + body + routing info) in bytes.
    pub size: u32,
    /// Enqueue time and per-message TTL.
    pub meta: MsgMeta,
}

/// Counters describing a store (all zero for stores that keep nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Segment files on disk.
    pub segments: u64,
    /// Bytes of segment files on disk.
    pub bytes: u64,
    /// Live (queue, message) memberships: appended and not yet acked.
    pub messages: u64,
    /// fsync rounds performed by the group-commit syncer.
    pub sync_rounds: u64,
    /// Segments deleted because every message in them was acked.
    pub segments_deleted: u64,
    /// Segments rewritten by compaction.
    pub segments_compacted: u64,
}

/// Resolves when prior writes are durable.
pub type SyncFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'static>>;

/// Persistent message storage (see the module docs for the contract).
pub trait MessageStore: Send + Sync + fmt::Debug + 'static {
    /// Which implementation this is.
    fn kind(&self) -> StorageType;
    /// Record a persistent message for a durable queue. Must not block on fsync.
    ///
    /// # Errors
    /// I/O errors; the broker then refuses the publish (nack).
    fn append(&self, queue: &QueueKey, msg: &StoredMessage) -> Result<(), StoreError>;
    /// Record that message `id` of `queue` is settled and may be discarded.
    ///
    /// # Errors
    /// I/O errors.
    fn ack(&self, queue: &QueueKey, id: u64) -> Result<(), StoreError>;
    /// Drop all messages of a queue (purge or delete).
    ///
    /// # Errors
    /// I/O errors.
    fn drop_queue(&self, queue: &QueueKey) -> Result<(), StoreError>;
    /// A future that resolves once everything appended or acked so far is durable
    /// (group commit: many callers share one fsync).
    fn sync(&self) -> SyncFuture;
    /// Messages to restore at start-up, per queue, in id order.
    ///
    /// # Errors
    /// I/O or corruption errors.
    fn recover(&self) -> Result<Vec<(QueueKey, Vec<StoredMessage>)>, StoreError>;

    /// Record one message routed to several durable queues, stored once. `targets` holds each
    /// queue with the message's id in that queue (`msg.id` is ignored). Same contract as
    /// [`append`](Self::append) for every target.
    ///
    /// # Errors
    /// I/O errors; the broker then refuses the publish (nack).
    fn append_shared(
        &self,
        targets: &[(QueueKey, u64)],
        msg: &StoredMessage,
    ) -> Result<(), StoreError> {
        for (queue, id) in targets {
            let mut m = msg.clone();
            m.id = *id;
            self.append(queue, &m)?;
        }
        Ok(())
    }

    /// Read back a message that was appended and not acked (for paging bodies in on
    /// delivery). `Ok(None)` if the store does not hold it (or keeps nothing).
    ///
    /// # Errors
    /// I/O errors, or [`StoreError::Corrupt`] if the record fails its checksum.
    fn read(&self, queue: &QueueKey, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        let _ = (queue, id);
        Ok(None)
    }

    /// Like [`recover`](Self::recover) but without bodies: per queue, the ids (in order) and
    /// record sizes of the unacked messages. Cheap for stores with an index; pair with
    /// [`read`](Self::read) to page bodies in.
    ///
    /// # Errors
    /// I/O or corruption errors.
    fn recover_index(&self) -> Result<Vec<(QueueKey, Vec<IndexEntry>)>, StoreError> {
        Ok(self
            .recover()?
            .into_iter()
            .map(|(q, msgs)| {
                let entries = msgs
                    .iter()
                    .map(|m| IndexEntry {
                        id: m.id,
                        size: u32::try_from(m.body.len() + m.raw_properties.len())
                            .unwrap_or(u32::MAX),
                        meta: m.meta,
                    })
                    .collect();
                (q, entries)
            })
            .collect())
    }

    /// Counters for monitoring.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}
