//! Paths used by code that `eventbus-macros` generates. Not public API.

pub use crate::event::EventRegistration;
pub use crate::handler::dispatch_to;
pub use futures_util::future::BoxFuture;
pub use inventory;
pub use serde;
pub use std::boxed::Box;
pub use std::string::{String, ToString};
pub use std::sync::Arc;
pub use std::time::Duration;
pub use std::vec::Vec;

/// Turns a key field into the partition key string.
pub fn key_to_string<K: std::fmt::Display + ?Sized>(key: &K) -> String {
    key.to_string()
}

/// Turns an optional key field into the partition key (`None` = unkeyed).
pub fn opt_key_to_string<K: std::fmt::Display>(key: &Option<K>) -> Option<String> {
    key.as_ref().map(|k| k.to_string())
}
