//! The transport-independent message: metadata plus encoded payload.

use std::borrow::Cow;

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
    /// Event name ([`Event::NAME`]); transports route by it. Borrowed from
    /// the event type's constant when the envelope is made from a typed
    /// event, owned when it was received or read back.
    pub name: Cow<'static, str>,
    /// Payload schema version ([`Event::VERSION`]).
    pub version: u32,
    /// Partition key; `None` for unkeyed events.
    pub key: Option<String>,
    /// Correlation, causation, trace context and custom headers.
    pub headers: Headers,
    /// When the event happened (set when the envelope is created).
    pub occurred_at: DateTime<Utc>,
    /// MIME type of `payload` (borrowed when it is a constant such as
    /// [`JSON_CONTENT_TYPE`]).
    pub content_type: Cow<'static, str>,
    /// The encoded event.
    pub payload: Bytes,
}

impl Envelope {
    /// Wraps a typed event: JSON payload, now as `occurred_at`, and a
    /// `traceparent` continuing the current handler's trace (or starting a
    /// new one).
    ///
    /// Outside a handler the id is a fresh UUIDv7. Inside a handler (on the
    /// task running it) the event is *caused* by the message being handled:
    /// `causation-id` is that message's id, `correlation-id` is inherited
    /// (or that message's id), and the id is derived from the cause's id,
    /// the group and the event's position among the attempt's
    /// publications — so a retried or redelivered handler publishes the same
    /// ids again, and inboxes downstream drop the repeats.
    pub fn from_event<E: Event>(event: &E) -> Result<Self, EncodeError> {
        let payload = codec::encode(E::NAME, event)?;
        // One clock read for both the UUIDv7 timestamp and `occurred_at`.
        let since_epoch = since_epoch(std::time::SystemTime::now());
        let mut headers = new_message_headers();
        let id = match crate::middleware::trace::Cause::current() {
            Some(cause) => {
                let id = cause.derived_id();
                headers.insert(header::CORRELATION_ID, cause.correlation_id);
                headers.insert(header::CAUSATION_ID, cause.id.to_string());
                id
            }
            None => message_id_at(since_epoch),
        };
        Ok(Self {
            id,
            name: Cow::Borrowed(E::NAME),
            version: E::VERSION,
            key: event.partition_key(),
            headers,
            occurred_at: DateTime::from_timestamp(
                i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
                since_epoch.subsec_nanos(),
            )
            .unwrap_or_default(),
            content_type: Cow::Borrowed(JSON_CONTENT_TYPE),
            payload,
        })
    }

    /// Decodes the payload as `E`. Fails if the name or encoding does not
    /// match, or the envelope's version is newer than [`Event::VERSION`].
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        if self.name != E::NAME {
            return Err(DecodeError::UnknownEvent(self.name.to_string()));
        }
        // A newer schema than this code knows cannot be read safely (older
        // ones are, by serde's defaults): dead-lettered, not retried.
        if self.version > E::VERSION {
            return Err(DecodeError::UnsupportedVersion {
                event: self.name.to_string(),
                expected: E::VERSION,
                found: self.version,
            });
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

/// The headers of a new message: a `traceparent` from the current
/// OpenTelemetry span (feature `otel`, with its `tracestate`), else a child
/// of the handler's trace on this task, else a new root.
fn new_message_headers() -> Headers {
    #[cfg(feature = "otel")]
    if let Some((trace, state)) = crate::observe::otel::current_trace() {
        let mut headers = Headers::with_trace(trace);
        if let Some(state) = state {
            headers.insert_static(header::TRACESTATE, state);
        }
        return headers;
    }
    Headers::with_trace(crate::middleware::TraceParent::for_new_message())
}

/// A fresh UUIDv7 message id: 48-bit Unix milliseconds, then random bits.
///
/// Built from a thread-local fast RNG rather than the OS RNG: ids need to be
/// unique, not unpredictable, and this is on the publish hot path.
pub fn new_message_id() -> Uuid {
    message_id_at(since_epoch(std::time::SystemTime::now()))
}

/// Time since the Unix epoch (zero for clocks set before it).
fn since_epoch(now: std::time::SystemTime) -> std::time::Duration {
    now.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// A UUIDv7 message id with the timestamp `since_epoch`.
fn message_id_at(since_epoch: std::time::Duration) -> Uuid {
    let millis = since_epoch.as_millis() as u64;
    let random: [u8; 10] = fastrand::u128(..).to_le_bytes()[..10]
        .try_into()
        .expect("10 bytes");
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}
