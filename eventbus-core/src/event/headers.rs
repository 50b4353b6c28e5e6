//! String headers carried with every envelope.

use std::collections::BTreeMap;

/// Well-known header names.
pub mod header {
    /// Groups all messages caused by one original request.
    pub const CORRELATION_ID: &str = "correlation-id";
    /// The id of the message that caused this one.
    pub const CAUSATION_ID: &str = "causation-id";
    /// W3C trace context (`00-<trace-id>-<span-id>-<flags>`).
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    /// On a dead-lettered message: the error that exhausted its retries.
    pub const DEAD_LETTER_ERROR: &str = "x-eventbus-error";
    /// On a dead-lettered message: the kind of failure (`handler`, `decode`, `unknown-event`, `timeout`, `panic`).
    pub const DEAD_LETTER_REASON: &str = "x-eventbus-reason";
    /// On a dead-lettered message: how many attempts were made.
    pub const DEAD_LETTER_ATTEMPTS: &str = "x-eventbus-attempts";
    /// On a dead-lettered message: the handler group that gave up.
    pub const DEAD_LETTER_GROUP: &str = "x-eventbus-group";
}

/// Ordered string headers (correlation, causation, trace context, custom).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// Empty headers.
    pub fn new() -> Self {
        Self::default()
    }
    /// The value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
    /// Sets header `name`, returning the previous value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(name.into(), value.into())
    }
    /// Removes header `name`.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }
    /// Iterates over `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The correlation id, if set.
    pub fn correlation_id(&self) -> Option<&str> {
        self.get(header::CORRELATION_ID)
    }
    /// The causation id, if set.
    pub fn causation_id(&self) -> Option<&str> {
        self.get(header::CAUSATION_ID)
    }
    /// The W3C `traceparent`, if set.
    pub fn traceparent(&self) -> Option<&str> {
        self.get(header::TRACEPARENT)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Self(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}
