//! String headers carried with every envelope.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::middleware::TraceParent;

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
///
/// The `traceparent` of an envelope made from a typed event is kept as its
/// [`TraceParent`] value and turned into text only when someone reads it as
/// a header (a broker transport writing it, say): publishing in process
/// allocates nothing for headers. It reads, iterates, compares and
/// serializes exactly like the text header.
#[derive(Clone, Default)]
pub struct Headers {
    /// Sorted by name. Holds no `traceparent` while `trace` is set.
    entries: Vec<(Cow<'static, str>, String)>,
    /// The `traceparent`, not yet formatted.
    trace: Option<LazyTrace>,
}

/// A `traceparent` value and its text, formatted on first use. (The ids
/// are kept as `u64`s so that headers need no 16-byte alignment.)
#[derive(Clone)]
struct LazyTrace {
    trace_id: [u64; 2],
    span_id: u64,
    flags: u8,
    text: OnceLock<Box<str>>,
}

impl LazyTrace {
    fn new(t: TraceParent) -> Self {
        Self {
            trace_id: [(t.trace_id >> 64) as u64, t.trace_id as u64],
            span_id: t.span_id,
            flags: t.flags,
            text: OnceLock::new(),
        }
    }

    fn value(&self) -> TraceParent {
        TraceParent {
            trace_id: u128::from(self.trace_id[0]) << 64 | u128::from(self.trace_id[1]),
            span_id: self.span_id,
            flags: self.flags,
        }
    }

    fn text(&self) -> &str {
        self.text
            .get_or_init(|| self.value().to_header_value().into_boxed_str())
    }
}

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

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl Headers {
    /// Empty headers.
    pub fn new() -> Self {
        Self::default()
    }
    /// Headers holding just a `traceparent` for `trace` (formatted when first read).
    pub(crate) fn with_trace(trace: TraceParent) -> Self {
        Self {
            entries: Vec::new(),
            trace: Some(LazyTrace::new(trace)),
        }
    }
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(name))
    }
    /// The value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some(t) = &self.trace {
            if name == header::TRACEPARENT {
                return Some(t.text());
            }
        }
        self.find(name).ok().map(|i| self.entries[i].1.as_str())
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
    fn insert_cow(&mut self, name: Cow<'static, str>, value: String) -> Option<String> {
        let previous_trace = self.take_trace(&name);
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (name, value));
                previous_trace
            }
        }
    }
    /// Removes header `name`.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        if let Some(t) = self.take_trace(name) {
            return Some(t);
        }
        self.find(name).ok().map(|i| self.entries.remove(i).1)
    }
    /// If `name` is `traceparent` and it is held unformatted: takes it out, as text.
    fn take_trace(&mut self, name: &str) -> Option<String> {
        if self.trace.is_none() || name != header::TRACEPARENT {
            return None;
        }
        let t = self.trace.take()?;
        let value = t.value();
        Some(match t.text.into_inner() {
            Some(text) => text.into_string(),
            None => value.to_header_value(),
        })
    }
    /// Iterates over `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let split = match &self.trace {
            Some(_) => self
                .entries
                .partition_point(|(k, _)| &**k < header::TRACEPARENT),
            None => self.entries.len(),
        };
        let (before, after) = self.entries.split_at(split);
        fn entry<'a>((k, v): &'a (Cow<'static, str>, String)) -> (&'a str, &'a str) {
            (k, v)
        }
        before
            .iter()
            .map(entry)
            .chain(self.trace.iter().map(|t| (header::TRACEPARENT, t.text())))
            .chain(after.iter().map(entry))
    }
    /// Number of headers.
    pub fn len(&self) -> usize {
        self.entries.len() + usize::from(self.trace.is_some())
    }
    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    /// The W3C trace context: the `traceparent` header parsed (`None` if it
    /// is missing or malformed). Free for envelopes made from typed events,
    /// whose trace context is kept unformatted.
    pub fn trace_parent(&self) -> Option<TraceParent> {
        match &self.trace {
            Some(t) => Some(t.value()),
            None => self.traceparent().and_then(TraceParent::parse),
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let iter = iter.into_iter();
        let mut h = Self {
            entries: Vec::with_capacity(iter.size_hint().0),
            trace: None,
        };
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
        Ok(Self {
            entries: map.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect(),
            trace: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{header, Headers};
    use crate::middleware::TraceParent;

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

    #[test]
    fn unformatted_traceparent_behaves_like_the_text_header() {
        let tp = TraceParent::new_root();
        let text = tp.to_header_value();
        let lazy = || {
            let mut h = Headers::with_trace(tp);
            h.insert("zz", "1");
            h.insert("aa", "2");
            h
        };
        let eager: Headers = [("zz", "1"), ("aa", "2"), (header::TRACEPARENT, &*text)]
            .into_iter()
            .collect();
        let h = lazy();
        assert_eq!(h, eager);
        assert_eq!(eager, h);
        assert_eq!(h.len(), 3);
        assert_eq!(h.traceparent(), Some(&*text));
        assert_eq!(h.trace_parent(), Some(tp));
        assert_eq!(eager.trace_parent(), Some(tp));
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("aa", "2"), (header::TRACEPARENT, &*text), ("zz", "1")]
        );
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            serde_json::to_string(&eager).unwrap()
        );
        assert_eq!(format!("{h:?}"), format!("{eager:?}"));
        assert_eq!(h.clone(), eager);

        let mut h = lazy();
        assert_eq!(h.insert(header::TRACEPARENT, "other"), Some(text.clone()));
        assert_eq!(h.traceparent(), Some("other"));
        assert_eq!(h.len(), 3);
        assert_eq!(h.trace_parent(), None, "malformed text");

        let mut h = lazy();
        assert_eq!(h.remove(header::TRACEPARENT), Some(text.clone()));
        assert_eq!(h.traceparent(), None);
        assert_eq!(h.len(), 2);
        assert_eq!(h.remove(header::TRACEPARENT), None);

        let mut h = Headers::with_trace(tp);
        assert_eq!(h.insert_static(header::TRACEPARENT, "x"), Some(text));
        assert_eq!(h.iter().collect::<Vec<_>>(), [(header::TRACEPARENT, "x")]);
    }
}
