//! The process-wide registry of event types, filled at link time by
//! `#[derive(Event)]` (via `inventory`). It restores a type-erased event from
//! its name and payload, which generic tooling (outbox admin, dead-letter
//! inspection) needs.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use super::{codec, DecodeError, Event};

/// An event whose type is only known at run time.
pub trait AnyEvent: Any + Send + Sync + fmt::Debug {
    /// [`Event::NAME`].
    fn name(&self) -> &'static str;
    /// [`Event::VERSION`].
    fn version(&self) -> u32;
    /// [`Event::partition_key`].
    fn partition_key(&self) -> Option<String>;
    /// The payload as JSON.
    fn to_json(&self) -> serde_json::Value;
    /// For downcasting to the concrete type.
    fn as_any(&self) -> &dyn Any;
}

impl<E: Event + fmt::Debug> AnyEvent for E {
    fn name(&self) -> &'static str {
        E::NAME
    }
    fn version(&self) -> u32 {
        E::VERSION
    }
    fn partition_key(&self) -> Option<String> {
        Event::partition_key(self)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl dyn AnyEvent {
    /// Downcasts to the concrete event type.
    pub fn downcast_ref<E: Event>(&self) -> Option<&E> {
        self.as_any().downcast_ref::<E>()
    }
}

type DecodeFn = fn(&str, &[u8]) -> Result<Box<dyn AnyEvent>, DecodeError>;

/// One registered event type (emitted by `#[derive(Event)]`).
pub struct EventRegistration {
    name: &'static str,
    version: u32,
    type_name: fn() -> &'static str,
    decode: DecodeFn,
}

impl fmt::Debug for EventRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRegistration")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("type", &(self.type_name)())
            .finish()
    }
}

fn decode_boxed<E: Event + fmt::Debug>(
    content_type: &str,
    payload: &[u8],
) -> Result<Box<dyn AnyEvent>, DecodeError> {
    codec::decode::<E>(E::NAME, content_type, payload).map(|e| Box::new(e) as Box<dyn AnyEvent>)
}

impl EventRegistration {
    /// The registration of `E`.
    pub const fn of<E: Event + fmt::Debug>() -> Self {
        Self {
            name: E::NAME,
            version: E::VERSION,
            type_name: std::any::type_name::<E>,
            decode: decode_boxed::<E>,
        }
    }
    /// The event name.
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// The schema version.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The Rust type's name.
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }
}

inventory::collect!(EventRegistration);

/// Lookup over every event type linked into this program.
#[derive(Debug)]
pub struct EventRegistry {
    by_name: HashMap<&'static str, &'static EventRegistration>,
    duplicates: Vec<(&'static str, &'static str, &'static str)>,
}

impl EventRegistry {
    /// The registry of this process (built on first use).
    pub fn global() -> &'static EventRegistry {
        static REGISTRY: OnceLock<EventRegistry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let mut by_name: HashMap<&'static str, &'static EventRegistration> = HashMap::new();
            let mut duplicates = Vec::new();
            for reg in inventory::iter::<EventRegistration> {
                if let Some(prev) = by_name.insert(reg.name, reg) {
                    duplicates.push((reg.name, prev.type_name(), reg.type_name()));
                }
            }
            EventRegistry {
                by_name,
                duplicates,
            }
        })
    }

    /// The registration for `name`.
    pub fn get(&self, name: &str) -> Option<&'static EventRegistration> {
        self.by_name.get(name).copied()
    }

    /// All registered event names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.by_name.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Event names declared by more than one type: `(name, first type, second type)`.
    /// Two types sharing a name is a bug; [`EventRegistry::check`] reports it.
    pub fn duplicates(&self) -> &[(&'static str, &'static str, &'static str)] {
        &self.duplicates
    }

    /// Fails if two event types share one name.
    pub fn check(&self) -> Result<(), String> {
        match self.duplicates.first() {
            None => Ok(()),
            Some((name, a, b)) => Err(format!(
                "event name `{name}` is declared by both `{a}` and `{b}`"
            )),
        }
    }

    /// Restores a type-erased event from name, content type and payload.
    pub fn decode(
        &self,
        name: &str,
        content_type: &str,
        payload: &[u8],
    ) -> Result<Box<dyn AnyEvent>, DecodeError> {
        let reg = self
            .get(name)
            .ok_or_else(|| DecodeError::UnknownEvent(name.to_owned()))?;
        (reg.decode)(content_type, payload)
    }

    /// Restores the event carried by `envelope`.
    pub fn decode_envelope(
        &self,
        envelope: &super::Envelope,
    ) -> Result<Box<dyn AnyEvent>, DecodeError> {
        self.decode(&envelope.name, &envelope.content_type, &envelope.payload)
    }
}
