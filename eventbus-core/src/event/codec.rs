//! Payload encoding. JSON is the default and currently the only codec;
//! the content type travels in every envelope so others can be added.

use std::cell::RefCell;

use bytes::Bytes;

use crate::BoxError;

/// Content type of JSON-encoded payloads.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// An event could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode event `{event}`: {source}")]
pub struct EncodeError {
    /// The event name.
    pub event: String,
    /// The underlying serializer error.
    #[source]
    pub source: BoxError,
}

/// A payload could not be decoded into an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No event with this name is known here.
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    /// The payload's content type is not supported.
    #[error("unsupported content type `{content_type}` for event `{event}`")]
    UnsupportedContentType {
        /// The event name.
        event: String,
        /// The content type found in the envelope.
        content_type: String,
    },
    /// The payload does not match the event's schema.
    #[error("cannot decode event `{event}`: {source}")]
    Payload {
        /// The event name.
        event: String,
        /// The underlying deserializer error.
        #[source]
        source: BoxError,
    },
    /// The event name is declared by more than one type in this program, so
    /// it cannot be restored by name (see `EventRegistry::check`).
    #[error("event name `{0}` is declared by more than one event type")]
    AmbiguousEvent(String),
    /// The payload was written for another version of the event than the
    /// one this program knows.
    #[error("event `{event}` has version {found}; this program knows version {expected}")]
    UnsupportedVersion {
        /// The event name.
        event: String,
        /// [`Event::VERSION`](crate::Event::VERSION) of the type linked in.
        expected: u32,
        /// The version in the envelope.
        found: u32,
    },
    /// The message is not a valid eventbus envelope (missing or malformed metadata).
    #[error("malformed envelope: {0}")]
    Envelope(String),
}

/// Encodes `event` as JSON into a payload of exactly its size.
///
/// Serialized into a per-thread scratch buffer, then copied once into an
/// allocation of the final length: one allocation per payload, and a
/// `Bytes` that owns it directly (`Bytes::from(Vec)` with spare capacity
/// would allocate a second, shared header for it).
pub(crate) fn encode<E: serde::Serialize>(name: &str, event: &E) -> Result<Bytes, EncodeError> {
    let fail = |e: serde_json::Error| EncodeError {
        event: name.to_owned(),
        source: Box::new(e),
    };
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let result = serde_json::to_writer(&mut *buf, event);
            let payload = result.map(|()| Bytes::copy_from_slice(&buf)).map_err(fail);
            if buf.capacity() > SCRATCH_KEEP {
                // Do not hold on to the memory of one huge event.
                *buf = Vec::new();
            }
            payload
        }
        // Re-entered (a `Serialize` impl that publishes): encode directly.
        Err(_) => serde_json::to_vec(event).map(Bytes::from).map_err(fail),
    })
}

/// Payloads are JSON; an empty content type is taken as JSON.
pub(crate) fn check_content_type(name: &str, content_type: &str) -> Result<(), DecodeError> {
    if content_type.is_empty() || content_type == JSON_CONTENT_TYPE {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedContentType {
            event: name.to_owned(),
            content_type: content_type.to_owned(),
        })
    }
}

/// Largest scratch buffer kept between events, per thread.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn decode<E: serde::de::DeserializeOwned>(
    name: &str,
    content_type: &str,
    payload: &[u8],
) -> Result<E, DecodeError> {
    check_content_type(name, content_type)?;
    serde_json::from_slice(payload).map_err(|e| DecodeError::Payload {
        event: name.to_owned(),
        source: Box::new(e),
    })
}
