//! Payload encoding. JSON is the default and currently the only codec;
//! the content type travels in every envelope so others can be added.

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
    /// The message is not a valid eventbus envelope (missing or malformed metadata).
    #[error("malformed envelope: {0}")]
    Envelope(String),
}

pub(crate) fn encode<E: serde::Serialize>(name: &str, event: &E) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(event).map_err(|e| EncodeError {
        event: name.to_owned(),
        source: Box::new(e),
    })
}

pub(crate) fn decode<E: serde::de::DeserializeOwned>(
    name: &str,
    content_type: &str,
    payload: &[u8],
) -> Result<E, DecodeError> {
    if !content_type.is_empty() && content_type != JSON_CONTENT_TYPE {
        return Err(DecodeError::UnsupportedContentType {
            event: name.to_owned(),
            content_type: content_type.to_owned(),
        });
    }
    serde_json::from_slice(payload).map_err(|e| DecodeError::Payload {
        event: name.to_owned(),
        source: Box::new(e),
    })
}
