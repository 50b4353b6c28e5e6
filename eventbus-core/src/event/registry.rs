//! Type-erased events, carried by name through [`typetag`].
//!
//! `Box<dyn AnyEvent>` is a typetag trait object, adjacently tagged by the
//! event name:
//!
//! ```json
//! {"event": "user.registered", "payload": {"user_id": 7, "email": "a@b.c"}}
//! ```
//!
//! Adjacent tagging works for every shape `#[derive(Event)]` accepts:
//! structs, tuple and unit structs and enums (an internally tagged form
//! would need the payload to be a JSON object).
//!
//! `#[derive(Event)]` writes `#[typetag::serde(name = "<event name>")]
//! impl AnyEvent for <Type>` for each non-generic event, so typetag's
//! registry (filled at link time through `inventory`) is the one list of
//! known events. [`EventRegistry`] reads the names from it and decodes
//! through it; it keeps no table of its own.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::{codec, DecodeError, Envelope};

/// The field of the serialized `Box<dyn AnyEvent>` that holds the event name.
pub const EVENT_TAG: &str = "event";
/// The field of the serialized `Box<dyn AnyEvent>` that holds the payload.
pub const EVENT_CONTENT: &str = "payload";

/// An event whose type is only known at run time.
///
/// Implemented by `#[derive(Event)]` for every non-generic event (together
/// with its typetag registration); `serde_json::to_string(&boxed)` and
/// `serde_json::from_str::<Box<dyn AnyEvent>>` round-trip any registered
/// event by name:
///
/// ```
/// # use eventbus_core as eventbus;
/// use eventbus_core::{AnyEvent, Event};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
/// #[event(name = "user.registered", key = "user_id")]
/// struct UserRegistered { user_id: u64 }
///
/// let boxed: Box<dyn AnyEvent> = Box::new(UserRegistered { user_id: 7 });
/// let json = serde_json::to_string(&boxed).unwrap();
/// assert_eq!(json, r#"{"event":"user.registered","payload":{"user_id":7}}"#);
///
/// let back: Box<dyn AnyEvent> = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.name(), "user.registered");
/// assert_eq!(back.downcast_ref(), Some(&UserRegistered { user_id: 7 }));
/// ```
#[typetag::serde(tag = "event", content = "payload")]
pub trait AnyEvent: Any + Send + Sync + fmt::Debug {
    /// [`Event::NAME`](super::Event::NAME).
    fn name(&self) -> &'static str;
    /// [`Event::VERSION`](super::Event::VERSION).
    fn version(&self) -> u32;
    /// [`Event::partition_key`](super::Event::partition_key).
    fn partition_key(&self) -> Option<String>;
    /// The payload (without the name) as JSON.
    fn to_json(&self) -> serde_json::Value;
    /// For downcasting to the concrete type.
    fn as_any(&self) -> &dyn Any;
}

impl dyn AnyEvent {
    /// Downcasts to the concrete event type.
    pub fn downcast_ref<E: AnyEvent>(&self) -> Option<&E> {
        self.as_any().downcast_ref::<E>()
    }
}

/// The event names linked into this program, read from typetag's registry.
#[derive(Debug)]
pub struct EventRegistry {
    /// Sorted, each name once.
    names: Vec<&'static str>,
    /// Names registered by more than one type (typetag refuses to decode
    /// them), sorted.
    duplicates: Vec<&'static str>,
}

impl EventRegistry {
    /// The registry of this process (read from typetag's registry on first use).
    pub fn global() -> &'static EventRegistry {
        static REGISTRY: OnceLock<EventRegistry> = OnceLock::new();
        REGISTRY.get_or_init(EventRegistry::read)
    }

    fn read() -> EventRegistry {
        let mut names = probe::registered_names().to_vec();
        names.sort_unstable();
        names.dedup();
        let duplicates = names
            .iter()
            .copied()
            .filter(|name| !probe::is_unique(name))
            .collect();
        EventRegistry { names, duplicates }
    }

    /// Whether an event type with this name is linked into this program.
    pub fn contains(&self, name: &str) -> bool {
        self.names.binary_search(&name).is_ok()
    }

    /// All registered event names, sorted.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Event names declared by more than one type, sorted. Two types sharing
    /// a name is a bug; [`EventRegistry::check`] reports it.
    pub fn duplicates(&self) -> &[&'static str] {
        &self.duplicates
    }

    /// Fails if two event types share one name (the bus runs this at start).
    ///
    /// Two events with one name in the same module are already a compile
    /// error; this catches those in different modules or crates.
    pub fn check(&self) -> Result<(), String> {
        match self.duplicates.as_slice() {
            [] => Ok(()),
            [name] => Err(format!(
                "event name `{name}` is declared by more than one event type \
                 (look for `#[event(name = \"{name}\")]` or a type whose name derives to it); \
                 event names must be unique"
            )),
            names => Err(format!(
                "event names {} are each declared by more than one event type; \
                 event names must be unique",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Restores a type-erased event from its name, content type and payload.
    ///
    /// The payload goes through typetag's `Deserialize for Box<dyn AnyEvent>`
    /// as the `payload` of `{"event": name, "payload": …}` (without building
    /// that JSON).
    pub fn decode(
        &self,
        name: &str,
        content_type: &str,
        payload: &[u8],
    ) -> Result<Box<dyn AnyEvent>, DecodeError> {
        if !self.contains(name) {
            return Err(DecodeError::UnknownEvent(name.to_owned()));
        }
        if self.duplicates.binary_search(&name).is_ok() {
            return Err(DecodeError::AmbiguousEvent(name.to_owned()));
        }
        codec::check_content_type(name, content_type)?;
        let payload_error = |e: serde_json::Error| DecodeError::Payload {
            event: name.to_owned(),
            source: Box::new(e),
        };
        let mut json = serde_json::Deserializer::from_slice(payload);
        let found = Cell::new(false);
        let event = <Box<dyn AnyEvent>>::deserialize(ByName {
            name,
            found: &found,
            payload: &mut json,
        })
        .map_err(payload_error)?;
        json.end().map_err(payload_error)?;
        debug_assert!(found.get());
        Ok(event)
    }

    /// Restores the event carried by `envelope`. Its version must be the
    /// version of the event type linked into this program.
    pub fn decode_envelope(&self, envelope: &Envelope) -> Result<Box<dyn AnyEvent>, DecodeError> {
        self.decode_version(
            &envelope.name,
            envelope.version,
            &envelope.content_type,
            &envelope.payload,
        )
    }

    /// [`EventRegistry::decode`], and the payload's `version` must be the
    /// version of the event type linked into this program
    /// ([`DecodeError::UnsupportedVersion`] otherwise).
    pub fn decode_version(
        &self,
        name: &str,
        version: u32,
        content_type: &str,
        payload: &[u8],
    ) -> Result<Box<dyn AnyEvent>, DecodeError> {
        let event = self.decode(name, content_type, payload)?;
        if event.version() != version {
            return Err(DecodeError::UnsupportedVersion {
                event: name.to_owned(),
                expected: event.version(),
                found: version,
            });
        }
        Ok(event)
    }
}

/// Presents `{"event": name, "payload": <payload>}` to typetag's visitor.
struct ByName<'a, P> {
    name: &'a str,
    /// Set once typetag's registry has resolved `name` to a unique type.
    found: &'a Cell<bool>,
    payload: P,
}

impl<'de, P: Deserializer<'de>> Deserializer<'de> for ByName<'_, P> {
    type Error = P::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(ByNameMap {
            name: self.name,
            found: self.found,
            payload: Some(self.payload),
            next: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct ByNameMap<'a, P> {
    name: &'a str,
    found: &'a Cell<bool>,
    payload: Option<P>,
    /// 0: the tag comes next, 1: the payload, 2: done.
    next: u8,
}

impl<'de, P: Deserializer<'de>> MapAccess<'de> for ByNameMap<'_, P> {
    type Error = P::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match self.next {
            0 => EVENT_TAG,
            1 => EVENT_CONTENT,
            _ => return Ok(None),
        };
        seed.deserialize(StrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.next += 1;
        match self.next {
            1 => seed.deserialize(Tag {
                name: self.name,
                found: self.found,
                error: std::marker::PhantomData,
            }),
            _ => match self.payload.take() {
                Some(payload) => seed.deserialize(payload),
                None => Err(de::Error::custom("payload read twice")),
            },
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(2usize.saturating_sub(self.next.into()))
    }
}

/// The event name as the tag's value; records whether typetag's registry
/// resolved it.
struct Tag<'a, E> {
    name: &'a str,
    found: &'a Cell<bool>,
    error: std::marker::PhantomData<E>,
}

impl<'de, E: de::Error> Deserializer<'de> for Tag<'_, E> {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        let value = visitor.visit_str(self.name)?;
        self.found.set(true);
        Ok(value)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// Questions to typetag's registry that do not decode anything.
mod probe {
    use super::*;

    /// Every name in typetag's registry (a name registered twice may appear
    /// twice): typetag lists them when asked for a name it does not know.
    pub(super) fn registered_names() -> &'static [&'static str] {
        // Event names are ASCII words (checked by the derive); no event has this one.
        const NOT_AN_EVENT: &str = "\u{0}eventbus: not an event";
        match ask(NOT_AN_EVENT) {
            Err(Answer::Unknown(names)) => names,
            other => unreachable!("typetag resolved an impossible event name: {other:?}"),
        }
    }

    /// Whether typetag resolves `name` to exactly one type.
    pub(super) fn is_unique(name: &str) -> bool {
        let found = Cell::new(false);
        // The payload refuses to be read, so nothing is decoded; `found`
        // tells whether the lookup of the name succeeded.
        let _ = <Box<dyn AnyEvent>>::deserialize(ByName {
            name,
            found: &found,
            payload: Refuse,
        });
        found.get()
    }

    fn ask(name: &str) -> Result<Box<dyn AnyEvent>, Answer> {
        <Box<dyn AnyEvent>>::deserialize(ByName {
            name,
            found: &Cell::new(false),
            payload: Refuse,
        })
    }

    /// What a probe learned.
    #[derive(Debug)]
    pub(super) enum Answer {
        /// The name is not registered; these are.
        Unknown(&'static [&'static str]),
        /// Anything else (the payload refused, or a non-unique name).
        Other(String),
    }

    impl fmt::Display for Answer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Answer::Unknown(names) => write!(f, "unknown event; known: {names:?}"),
                Answer::Other(msg) => f.write_str(msg),
            }
        }
    }

    impl std::error::Error for Answer {}

    impl de::Error for Answer {
        fn custom<T: fmt::Display>(msg: T) -> Self {
            Answer::Other(msg.to_string())
        }

        fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
            Answer::Unknown(expected)
        }
    }

    /// A payload that cannot be read.
    pub(super) struct Refuse;

    impl<'de> Deserializer<'de> for Refuse {
        type Error = Answer;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Answer> {
            Err(Answer::Other("probe: payload not read".into()))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct enum identifier ignored_any
        }
    }
}

/// `AnyEvent::to_json` of derived events.
#[doc(hidden)]
pub fn payload_json<E: serde::Serialize>(event: &E) -> serde_json::Value {
    serde_json::to_value(event).unwrap_or(serde_json::Value::Null)
}
