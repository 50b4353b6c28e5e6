//! String headers carried with every envelope.

use std::borrow::Cow;
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
///
/// Stored as a vector sorted by name: envelopes carry a handful of headers,
/// and a small vector is cheaper to build, clone and drop than a tree map
/// (one allocation instead of a node, and no pointer chasing). Serialized as
/// a JSON object, in name order. Well-known names are kept as `&'static str`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Cow<'static, str>, String)>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As the map it models: `Headers({"name": "value"})`.
        struct AsMap<'a>(&'a Headers);
        impl std::fmt::Debug for AsMap<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map().entries(self.0.iter()).finish()
            }
        }
        f.debug_tuple("Headers").field(&AsMap(self)).finish()
    }
}

impl Headers {
    /// Empty headers.
    pub fn new() -> Self {
        Self::default()
    }
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(name))
    }
    /// The value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).ok().map(|i| self.0[i].1.as_str())
    }
    /// Sets header `name`, returning the previous value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.insert_cow(Cow::Owned(name.into()), value.into())
    }
    /// Sets a header whose name is a constant (such as those in [`header`])
    /// without allocating for the name.
    pub fn insert_static(
        &mut self,
        name: &'static str,
        value: impl Into<String>,
    ) -> Option<String> {
        self.insert_cow(Cow::Borrowed(name), value.into())
    }
    /// Headers holding just `name` (a constant) = `value`, sized for it.
    pub(crate) fn one_static(name: &'static str, value: String) -> Self {
        Self(vec![(Cow::Borrowed(name), value)])
    }
    fn insert_cow(&mut self, name: Cow<'static, str>, value: String) -> Option<String> {
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }
    /// Removes header `name`.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.find(name).ok().map(|i| self.0.remove(i).1)
    }
    /// Iterates over `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, v.as_str()))
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
        let iter = iter.into_iter();
        let mut h = Self(Vec::with_capacity(iter.size_hint().0));
        for (k, v) in iter {
            // Later duplicates win, as with a map.
            h.insert(k, v);
        }
        h
    }
}

impl serde::Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(Self(
            map.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::Headers;

    #[test]
    fn behaves_like_a_sorted_map() {
        let mut h: Headers = [("b", "1"), ("a", "2"), ("b", "3")].into_iter().collect();
        assert_eq!(h.len(), 2);
        assert_eq!(h.get("b"), Some("3"));
        assert_eq!(h.insert("c", "4"), None);
        assert_eq!(h.insert("a", "5"), Some("2".to_owned()));
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("a", "5"), ("b", "3"), ("c", "4")]
        );
        assert_eq!(h.remove("b"), Some("3".to_owned()));
        assert_eq!(h.insert_static("b", "6"), None);
        assert_eq!(h.insert("b", "7"), Some("6".to_owned()));
        assert_eq!(h.remove("b"), Some("7".to_owned()));
        assert_eq!(h.get("b"), None);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, r#"{"a":"5","c":"4"}"#);
        let back: Headers = serde_json::from_str(r#"{"c":"4","a":"5"}"#).unwrap();
        assert_eq!(back, h);
        assert_eq!(format!("{h:?}"), r#"Headers({"a": "5", "c": "4"})"#);
    }
}
