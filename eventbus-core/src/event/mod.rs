//! Typed domain events, their wire envelope and the registry of known events.

mod codec;
mod envelope;
mod headers;
pub(crate) mod registry;

pub use codec::{DecodeError, EncodeError, JSON_CONTENT_TYPE};
pub use envelope::{new_message_id, Envelope};
pub use headers::{header, Headers};
pub use registry::{AnyEvent, EventRegistry, EVENT_CONTENT, EVENT_TAG};

use serde::{de::DeserializeOwned, Serialize};

/// A typed domain event.
///
/// Usually derived with `#[derive(Event)]`:
///
/// ```
/// # use eventbus_core as eventbus;
/// use eventbus_core::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Event, Serialize, Deserialize)]
/// #[event(name = "user.registered", version = 1, key = "user_id")]
/// struct UserRegistered { user_id: u64, email: String }
///
/// let e = UserRegistered { user_id: 7, email: "a@b.c".into() };
/// assert_eq!(UserRegistered::NAME, "user.registered");
/// assert_eq!(e.partition_key().as_deref(), Some("7"));
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The event's stable name on the wire (also the routing key).
    const NAME: &'static str;
    /// The schema version of the payload.
    const VERSION: u32;

    /// The partition key: events with the same key are handled in order.
    /// `None` marks an unkeyed event, which may be handled in any order.
    fn partition_key(&self) -> Option<String>;
}
