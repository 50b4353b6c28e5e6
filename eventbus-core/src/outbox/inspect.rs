//! Reading parked rows: their payloads decoded by event name through the
//! [`EventRegistry`].
//!
//! Decoding needs the event types, and only the program that defines them
//! links them in. So [`ParkedEvent::describe`] is a library call: in the
//! user's own service (or an admin binary built next to it) it restores each
//! payload through its event type and reports payloads that no longer fit
//! it (another version, a changed schema). The generic `eventbus-relay
//! parked` command calls the same function, knows no event types, and shows
//! payloads as stored (JSON, or text) with the reason they were not decoded.

use serde_json::{json, Map, Value};

use super::ParkedEvent;
use crate::{AnyEvent, DecodeError, EventRegistry};

impl ParkedEvent {
    /// Restores the typed event through [`EventRegistry::global`]: its type
    /// must be linked into this program, and `version` must be its version.
    pub fn decode(&self) -> Result<Box<dyn AnyEvent>, DecodeError> {
        EventRegistry::global().decode_version(
            &self.name,
            self.version,
            &self.content_type,
            &self.payload,
        )
    }

    /// The row as one JSON object, for people and scripts:
    ///
    /// ```json
    /// {"seq": 3, "id": "…", "event": "user.registered", "version": 2,
    ///  "key": "7", "attempts": 10, "last_error": "publish rejected: …",
    ///  "parked_at": "2025-01-01T12:00:00Z", "content_type": "application/json",
    ///  "payload_format": "event", "payload": {"user_id": 7, "email": "…"}}
    /// ```
    ///
    /// `payload_format` says how `payload` was read:
    /// - `"event"`: decoded by its event type (as [`ParkedEvent::decode`])
    ///   and shown as that type serializes it;
    /// - `"json"`: not decoded (`decode_error` says why: an event type that
    ///   is not linked into this program, another version, a payload that no
    ///   longer fits), shown as stored;
    /// - `"text"`: not decoded and not JSON: the bytes as (lossy UTF-8) text.
    pub fn describe(&self) -> Value {
        let mut row = Map::new();
        row.insert("seq".into(), json!(self.seq));
        row.insert("id".into(), json!(self.id));
        row.insert("event".into(), json!(self.name));
        row.insert("version".into(), json!(self.version));
        row.insert("key".into(), json!(self.key));
        row.insert("attempts".into(), json!(self.attempts));
        row.insert("last_error".into(), json!(self.last_error));
        row.insert("parked_at".into(), json!(self.parked_at));
        row.insert("content_type".into(), json!(self.content_type));
        let (format, payload) = match self.decode() {
            Ok(event) => ("event", event.to_json()),
            Err(error) => {
                let why = match &error {
                    DecodeError::UnknownEvent(_) => {
                        format!("{error} (no event type of this name is linked into this program)")
                    }
                    _ => error.to_string(),
                };
                row.insert("decode_error".into(), json!(why));
                match serde_json::from_slice::<Value>(&self.payload) {
                    Ok(value) => ("json", value),
                    Err(_) => (
                        "text",
                        Value::String(String::from_utf8_lossy(&self.payload).into_owned()),
                    ),
                }
            }
        };
        row.insert("payload_format".into(), json!(format));
        row.insert("payload".into(), payload);
        Value::Object(row)
    }
}
