//! Consistent-hash ring for the `x-consistent-hash` exchange: each binding contributes
//! `weight` points (the binding key parsed as an integer); a routing key goes to the first point
//! at or after its hash.

use std::collections::BTreeMap;

/// A ring of destinations.
#[derive(Debug, Clone)]
pub struct HashRing<T> {
    points: BTreeMap<u64, T>,
}

impl<T> Default for HashRing<T> {
    fn default() -> Self {
        Self {
            points: BTreeMap::new(),
        }
    }
}

/// FNV-1a 64, then a finaliser for spread; stable across runs and platforms.
pub fn stable_hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

impl<T: Clone + PartialEq> HashRing<T> {
    /// Build the ring from `(destination id, destination, weight)` triples.
    pub fn build<'a>(bindings: impl IntoIterator<Item = (&'a str, T, u32)>) -> Self {
        let mut points = BTreeMap::new();
        for (id, dest, weight) in bindings {
            for i in 0..weight.min(10_000) {
                let h = stable_hash(format!("{id}\u{0}{i}").as_bytes());
                points.entry(h).or_insert_with(|| dest.clone());
            }
        }
        Self { points }
    }

    /// The destination for a routing key.
    pub fn route(&self, key: &str) -> Option<&T> {
        let h = stable_hash(key.as_bytes());
        self.points
            .range(h..)
            .next()
            .or_else(|| self.points.iter().next())
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_and_is_stable() {
        let ring = HashRing::build([("q1", 1, 10), ("q2", 2, 10), ("q3", 3, 10)]);
        let mut counts = [0; 4];
        for i in 0..3000 {
            let k = format!("key-{i}");
            let d = *ring.route(&k).unwrap();
            assert_eq!(*ring.route(&k).unwrap(), d);
            counts[d] += 1;
        }
        assert!(counts[1..].iter().all(|c| *c > 300), "{counts:?}");
    }

    /// Keys per destination of a ring of `partitions` queues `<group>.p<i>`
    /// bound as the eventbus AMQP transport binds them (binding key =
    /// `weight`), over the keys `k0`…`k{keys-1}`.
    fn spread(group: &str, partitions: usize, weight: u32, keys: usize) -> Vec<usize> {
        let ids: Vec<String> = (0..partitions)
            .map(|i| format!("{group}.p{i}\u{0}{weight}"))
            .collect();
        let ring = HashRing::build(
            ids.iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i, weight)),
        );
        let mut counts = vec![0; partitions];
        for k in 0..keys {
            counts[*ring.route(&format!("k{k}")).unwrap()] += 1;
        }
        counts
    }

    proptest::proptest! {
        /// With 100 points per partition (what the eventbus transport binds
        /// with), 1000 keys leave no partition with more than twice its
        /// fair share, whatever the group is called.
        #[test]
        fn hundred_points_per_partition_spread_keys_evenly(
            group in "[a-z][a-z0-9-]{0,24}",
            partitions in 2usize..=32,
        ) {
            let counts = spread(&group, partitions, 100, 1000);
            let fair = 1000 / partitions;
            let max = *counts.iter().max().unwrap();
            proptest::prop_assert!(max <= 2 * fair, "{counts:?} (fair {fair})");
        }
    }
}
