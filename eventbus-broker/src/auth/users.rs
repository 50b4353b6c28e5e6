//! Users and password hashing as RabbitMQ does it (`rabbit_password_hashing_sha256`):
//! `base64(salt ++ sha256(salt ++ password))` with a 4-byte random salt. Plain text never
//! reaches disk.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hashing algorithm name RabbitMQ uses in definitions.
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// A broker user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// `base64(salt ++ sha256(salt ++ password))`; empty means password login is disabled.
    pub password_hash: String,
    /// Always [`HASHING_ALGORITHM`].
    #[serde(default = "default_algo")]
    pub hashing_algorithm: String,
    /// Tags (`administrator`, `management`, …).
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_algo() -> String {
    HASHING_ALGORITHM.to_owned()
}

impl User {
    /// New user with a freshly salted hash of `password`.
    pub fn new(name: &str, password: &str, tags: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            password_hash: hash_password(password),
            hashing_algorithm: default_algo(),
            tags,
        }
    }

    /// Check a password against the stored hash (constant-time comparison).
    pub fn check_password(&self, password: &str) -> bool {
        let Some(raw) = base64_decode(&self.password_hash) else {
            return false;
        };
        if raw.len() != 4 + 32 {
            return false;
        }
        let (salt, expected) = raw.split_at(4);
        let got = salted(salt, password);
        got.iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn salted(salt: &[u8], password: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().to_vec()
}

/// Salt and hash a password.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 4] = std::array::from_fn(|_| fastrand::u8(..));
    let mut out = salt.to_vec();
    out.extend(salted(&salt, password));
    base64_encode(&out)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decode standard base64 (padding optional).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for ch in s.bytes().filter(|b| *b != b'=') {
        let v = B64.iter().position(|c| *c == ch)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_roundtrip() {
        let u = User::new("a", "pw", vec![]);
        assert!(u.check_password("pw"));
        assert!(!u.check_password("pW"));
        assert_ne!(hash_password("pw"), hash_password("pw"), "salted");
    }

    #[test]
    fn b64() {
        for n in 0..10 {
            let d: Vec<u8> = (0..n).collect();
            assert_eq!(base64_decode(&base64_encode(&d)).unwrap(), d);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
