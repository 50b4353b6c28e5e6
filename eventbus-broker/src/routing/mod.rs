//! Routing algorithms, independent of the broker model: topic trie, headers matching and the
//! consistent-hash ring. Exchanges in [`crate::model`] use these.

pub mod consistent_hash;
pub mod headers;
pub mod topic_trie;

pub use consistent_hash::HashRing;
pub use headers::headers_match;
pub use topic_trie::{topic_matches, TopicTrie};
