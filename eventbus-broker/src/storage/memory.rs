//! The in-memory message store: nothing survives a restart; `sync` completes immediately.

use super::{MessageStore, QueueKey, StorageType, StoreError, StoredMessage, SyncFuture};

/// A store that keeps nothing: queues hold their messages in memory anyway.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStore;

impl MessageStore for MemoryStore {
    fn kind(&self) -> StorageType {
        StorageType::Memory
    }
    fn append(&self, _queue: &QueueKey, _msg: &StoredMessage) -> Result<(), StoreError> {
        Ok(())
    }
    fn ack(&self, _queue: &QueueKey, _id: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn drop_queue(&self, _queue: &QueueKey) -> Result<(), StoreError> {
        Ok(())
    }
    fn sync(&self) -> SyncFuture {
        Box::pin(std::future::ready(Ok(())))
    }
    fn recover(&self) -> Result<Vec<(QueueKey, Vec<StoredMessage>)>, StoreError> {
        Ok(Vec::new())
    }
}
