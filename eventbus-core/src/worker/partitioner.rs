//! Maps a delivery to a worker.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

/// Chooses the worker for a key.
pub trait Partitioner: Send + Sync + 'static {
    /// The worker index in `0..workers` for `key`.
    fn partition(&self, key: &str, workers: usize) -> usize;
}

/// `hash(key) % workers` with a fixed hash function, so the mapping is the
/// same in every process and run.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashPartitioner;

/// A fixed-key hasher builder (SipHash with zero keys).
#[derive(Debug, Clone, Copy, Default)]
struct StableState;

impl BuildHasher for StableState {
    type Hasher = std::collections::hash_map::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::collections::hash_map::DefaultHasher::new()
    }
}

impl Partitioner for HashPartitioner {
    fn partition(&self, key: &str, workers: usize) -> usize {
        let mut h = StableState.build_hasher();
        h.write(key.as_bytes());
        (h.finish() % workers.max(1) as u64) as usize
    }
}

/// Round-robin for unkeyed or unordered deliveries.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin(AtomicUsize);

impl RoundRobin {
    pub(crate) fn next(&self, workers: usize) -> usize {
        self.0.fetch_add(1, AtomicOrdering::Relaxed) % workers.max(1)
    }
}
