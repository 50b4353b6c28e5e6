//! The transport-independent message: metadata plus encoded payload.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{codec, header, DecodeError, EncodeError, Event, Headers, JSON_CONTENT_TYPE};

/// One event on its way through outbox, transport and handlers.
///
/// Everything a transport needs travels here; the payload stays encoded
/// until a handler asks for its typed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique message id (UUIDv7: time-ordered). The inbox deduplicates by it.
    pub id: Uuid,
    /// Event name ([`Event::NAME`]); transports route by it.
    pub name: String,
    /// Payload schema version ([`Event::VERSION`]).
    pub version: u32,
    /// Partition key; `None` for unkeyed events.
    pub key: Option<String>,
    /// Correlation, causation, trace context and custom headers.
    pub headers: Headers,
    /// When the event happened (set when the envelope is created).
    pub occurred_at: DateTime<Utc>,
    /// MIME type of `payload`.
    pub content_type: String,
    /// The encoded event.
    pub payload: Bytes,
}

impl Envelope {
    /// Wraps a typed event: fresh UUIDv7 id, now as `occurred_at`, JSON
    /// payload, and a `traceparent` continuing the current handler's trace
    /// (or starting a new one).
    pub fn from_event<E: Event>(event: &E) -> Result<Self, EncodeError> {
        let payload = codec::encode(E::NAME, event)?;
        // One clock read for both the UUIDv7 timestamp and `occurred_at`.
        let now = std::time::SystemTime::now();
        Ok(Self {
            id: message_id_at(now),
            name: E::NAME.to_owned(),
            version: E::VERSION,
            key: event.partition_key(),
            headers: Headers::one_static(
                header::TRACEPARENT,
                crate::middleware::TraceParent::for_new_message().to_header_value(),
            ),
            occurred_at: DateTime::<Utc>::from(now),
            content_type: JSON_CONTENT_TYPE.to_owned(),
            payload: Bytes::from(payload),
        })
    }

    /// Decodes the payload as `E`. Fails if the name or encoding does not match.
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        if self.name != E::NAME {
            return Err(DecodeError::UnknownEvent(self.name.clone()));
        }
        codec::decode(&self.name, &self.content_type, &self.payload)
    }

    /// Sets a header (builder style).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Marks this envelope as caused by `cause`: copies its correlation id
    /// (or uses its id) and records its id as causation id.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        let correlation = cause
            .headers
            .correlation_id()
            .map(str::to_owned)
            .unwrap_or_else(|| cause.id.to_string());
        self.headers.insert(header::CORRELATION_ID, correlation);
        self.headers
            .insert(header::CAUSATION_ID, cause.id.to_string());
        if let Some(tp) = cause.headers.traceparent() {
            if self.headers.traceparent().is_none() {
                self.headers.insert(header::TRACEPARENT, tp);
            }
        }
        self
    }
}

/// A fresh UUIDv7 message id: 48-bit Unix milliseconds, then random bits.
///
/// Built from a thread-local fast RNG rather than the OS RNG: ids need to be
/// unique, not unpredictable, and this is on the publish hot path.
pub fn new_message_id() -> Uuid {
    message_id_at(std::time::SystemTime::now())
}

/// A UUIDv7 message id with the timestamp of `now`.
fn message_id_at(now: std::time::SystemTime) -> Uuid {
    let millis = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let random: [u8; 10] = fastrand::u128(..).to_le_bytes()[..10]
        .try_into()
        .expect("10 bytes");
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}
