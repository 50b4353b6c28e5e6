//! Derive macros for eventbus: `#[derive(Event)]` and `#[derive(Handler)]`.
//!
//! Use them through `eventbus` (or `eventbus-core`), which re-exports both
//! derives next to the traits they implement. The generated code reaches the
//! runtime through `::eventbus` when the crate depends on the facade, else
//! `::eventbus_core`; override it with `crate = "path"`.
//!
//! # Layout
//! - [`lib.rs`](self): the entry points only — parse, call `expand`.
//! - `ast`: the typed view of the input (`EventInput`, `HandlerInput`).
//! - `attr` + `symbol`: parsing of `#[event(...)]` / `#[handler(...)]`;
//!   option names are constants in `symbol`.
//! - `valid`: checks needing the whole input (does the key field exist,
//!   is the group given) producing the plan that `expand` emits.
//! - `ctxt`: collects spanned errors so every mistake is reported at once.
//! - `case`: default event names (`UserRegistered` → `user.registered`).
//! - `krate`: the path of the runtime crate.
//! - `expand/{event,handler}.rs`: code generation and the fallback impls
//!   emitted next to errors (one error per mistake, no cascades).

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

mod ast;
mod attr;
mod case;
mod ctxt;
mod expand;
mod krate;
mod symbol;
mod valid;

/// Implements `Event` for a struct or enum, and `AnyEvent` registered with
/// typetag under the event name (the process-wide `EventRegistry` reads
/// typetag's registry), so `Box<dyn AnyEvent>` (de)serializes by name as
/// `{"event": "<name>", "payload": <payload>}`. The user's crate needs no
/// typetag dependency.
///
/// The type must also implement `Serialize`, `Deserialize` and `Debug`
/// (`Debug` is a supertrait of `AnyEvent`).
///
/// ```ignore
/// use eventbus::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Event, Serialize, Deserialize)]
/// #[event(name = "user.registered", version = 2, key = "user_id")]
/// struct UserRegistered {
///     user_id: u64,
///     email: String,
/// }
///
/// // Name defaults to the type name split at its humps: "order.placed".
/// // The key may also be marked on the field.
/// #[derive(Debug, Event, Serialize, Deserialize)]
/// struct OrderPlaced {
///     #[event(key)]
///     order_id: u64,
/// }
///
/// assert_eq!(UserRegistered::NAME, "user.registered");
/// assert_eq!(OrderPlaced::NAME, "order.placed");
/// ```
///
/// # Options on the type: `#[event(...)]`
///
/// | option | meaning | default |
/// | --- | --- | --- |
/// | `name = "user.registered"` | wire name and routing key: dot-separated words of ASCII letters, digits, `_ - : /` | type name split at camel-case humps, lower-cased, joined by `.`: `UserRegistered` → `user.registered`, `HTTPRequestSent` → `http.request.sent` |
/// | `version = 2` | payload schema version, ≥ 1 | `1` |
/// | `key = "field"` or `key = field` (tuple structs: `key = 0`) | the partition key field | none: unkeyed, `partition_key()` is `None` |
/// | `crate = "::path"` | path of the runtime crate | `::eventbus`, else `::eventbus_core` |
///
/// # Options on a field
///
/// `#[event(key)]` marks the partition key field (instead of `key = ...`
/// on the type; giving both is an error).
///
/// The key field's type must implement `Display`; the key is its
/// `to_string()`. An `Option<T>` key field gives `None` (unkeyed) for
/// instances where it is `None`.
///
/// # Shapes
///
/// Structs with named fields, tuple structs and unit structs are supported.
/// Enums are supported without a key (the whole enum is the payload).
/// Unions are rejected.
///
/// Generic types get the `Event` impl but no `AnyEvent` impl and are **not**
/// registered in the `EventRegistry` (typetag registers one concrete type
/// per name).
///
/// # Duplicate names
///
/// Two events with the same name in the same module are a compile error
/// (E0428: "the name `__eventbus_event_name_…` is defined multiple times",
/// pointing at both names). Duplicates across modules or crates are
/// reported at run time by `EventRegistry::global().check()`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::event::derive(&input).into()
}

/// Implements `Handler` for a type that implements `Handle<E>` for each
/// event type `E` it lists.
///
/// ```ignore
/// use eventbus::{Context, Handle, Handler, BoxError};
///
/// #[derive(Handler)]
/// #[handler(group = "email-service", events(UserRegistered, OrderPlaced), concurrency = 4)]
/// struct SendMail;
///
/// impl Handle<UserRegistered> for SendMail {
///     async fn handle(&self, e: UserRegistered, cx: &Context) -> Result<(), BoxError> {
///         Ok(())
///     }
/// }
/// impl Handle<OrderPlaced> for SendMail {
///     async fn handle(&self, e: OrderPlaced, cx: &Context) -> Result<(), BoxError> {
///         Ok(())
///     }
/// }
/// ```
///
/// The generated `dispatch` compares the envelope's event name with each
/// listed event's `NAME`, decodes the payload and calls that `Handle` impl.
/// A name not listed fails with `HandleError::UnknownEvent`, a payload that
/// does not decode with `HandleError::Decode`.
///
/// # Options: `#[handler(...)]`
///
/// The options may be split over several `#[handler(...)]` attributes.
///
/// | option | meaning | default (`HandlerConfig::new`) |
/// | --- | --- | --- |
/// | `group = "email-service"` | **required.** The group (queue): instances of a group compete, different groups each get every event | — |
/// | `events(A, B, ...)` | **required.** The event types handled; the type must `impl Handle<A>` etc. | — |
/// | `concurrency = 4` | workers in this process, ≥ 1 | `1` |
/// | `ordering = "key"` or `"unordered"` | per-key order, or none | `"key"` |
/// | `max_attempts = 5` | attempts including the first, ≥ 1 (1 = no retry) | `5` |
/// | `backoff_ms = 100` | delay before the second attempt | `100` |
/// | `max_backoff_ms = 10000` | cap on any delay, ≥ `backoff_ms` | `10000` |
/// | `jitter = false` | randomise delays | `true` |
/// | `timeout_ms = 30000` or `timeout = "none"` | limit per attempt, or none | `30000` |
/// | `prefetch = 256` | deliveries in flight before acks, 1..=65535 | `256` |
/// | `partitions = 8` | split the group into N partitions shared by its instances, per-key order across instances (1..=1024; 1 = not partitioned) | not partitioned |
/// | `inbox` or `inbox = true` | deduplicate through the bus's inbox (`EventBus::inbox`) | off |
/// | `crate = "::path"` | path of the runtime crate | `::eventbus`, else `::eventbus_core` |
///
/// The group has no default on purpose: it names a durable queue, and a
/// default derived from the type name would silently move the handler to a
/// new, empty queue when the type is renamed.
#[proc_macro_derive(Handler, attributes(handler))]
pub fn derive_handler(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::handler::derive(&input).into()
}
