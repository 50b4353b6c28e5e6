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
}
