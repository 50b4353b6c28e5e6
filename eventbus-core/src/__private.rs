//! Paths used by code that `eventbus-macros` generates. Not public API.

pub use crate::event::registry::payload_json;
pub use crate::handler::dispatch_to;
pub use futures_util::future::BoxFuture;
pub use serde;
pub use serde_json::Value as JsonValue;
pub use std::boxed::Box;
pub use std::string::{String, ToString};
pub use std::sync::Arc;
pub use std::time::Duration;
pub use std::vec::Vec;
/// `#[derive(Event)]` brings this into scope as `typetag` next to its
/// `#[typetag::serde] impl AnyEvent`: typetag's generated code names its
/// crate `typetag::…` (a relative path), so users need no typetag
/// dependency of their own.
pub use typetag;

/// Turns a key field into the partition key string.
pub fn key_to_string<K: std::fmt::Display + ?Sized>(key: &K) -> String {
    key.to_string()
}

/// Turns an optional key field into the partition key (`None` = unkeyed).
pub fn opt_key_to_string<K: std::fmt::Display>(key: &Option<K>) -> Option<String> {
    key.as_ref().map(|k| k.to_string())
}
