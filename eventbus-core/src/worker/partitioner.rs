//! Maps a delivery to a worker.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

/// Chooses the worker for a key.
pub trait Partitioner: Send + Sync + 'static {
    /// The worker index in `0..workers` for `key`.
    fn partition(&self, key: &str, workers: usize) -> usize;
}

/// `hash(key) % workers` with a fixed hash function (FNV-1a, then a
/// murmur3 finalizer so every bit of the key reaches the low bits), so the
/// mapping is the same in every process and run.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashPartitioner;

/// The stable 64-bit hash of a partition key.
fn stable_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl Partitioner for HashPartitioner {
    fn partition(&self, key: &str, workers: usize) -> usize {
        (stable_hash(key.as_bytes()) % workers.max(1) as u64) as usize
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

#[cfg(test)]
mod tests {
    use super::{HashPartitioner, Partitioner};

    #[test]
    fn keys_spread_evenly() {
        for workers in [2usize, 4, 16] {
            let mut counts = vec![0usize; workers];
            for k in 0..16_000 {
                counts[HashPartitioner.partition(&format!("key-{k}"), workers)] += 1;
            }
            let expected = 16_000 / workers;
            for c in counts {
                assert!(
                    c > expected * 8 / 10 && c < expected * 12 / 10,
                    "{workers}: {c}"
                );
            }
        }
    }
}
