//! Behaviour of `#[derive(Event)]`: names, versions, keys, registry.

use eventbus_core::{Envelope, Event, EventRegistry};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "user.registered", version = 2, key = "user_id")]
struct UserRegistered {
    user_id: u64,
    email: String,
}

#[derive(Debug, Event, Serialize, Deserialize)]
struct OrderPlaced {
    #[event(key)]
    order_id: String,
    total_cents: u64,
}

#[derive(Debug, Event, Serialize, Deserialize)]
struct HTTPRequestSent {
    path: String,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(key = tenant)]
struct TenantRenamed {
    tenant: u32,
    name: String,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(key = "account")]
struct MaybeKeyed {
    account: Option<u64>,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "tuple.keyed", key = 1)]
struct TupleKeyed(String, u64);

#[derive(Debug, Event, Serialize, Deserialize)]
struct Heartbeat;

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "payment.state", version = 3)]
enum PaymentState {
    Authorized { amount: u64 },
    Captured,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "wrapped.generic")]
struct Wrapped<T> {
    inner: T,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(crate = "::eventbus_core", name = "explicit.crate")]
struct ExplicitCrate;

mod other_module {
    use super::*;

    // Same type name as an event elsewhere is fine: names are what count.
    #[derive(Debug, Event, Serialize, Deserialize)]
    #[event(name = "other.heartbeat")]
    pub struct Heartbeat;
}

#[test]
fn explicit_name_and_version() {
    assert_eq!(UserRegistered::NAME, "user.registered");
    assert_eq!(UserRegistered::VERSION, 2);
    assert_eq!(PaymentState::NAME, "payment.state");
    assert_eq!(PaymentState::VERSION, 3);
}

#[test]
fn default_name_splits_humps_and_version_is_one() {
    assert_eq!(OrderPlaced::NAME, "order.placed");
    assert_eq!(OrderPlaced::VERSION, 1);
    assert_eq!(HTTPRequestSent::NAME, "http.request.sent");
    assert_eq!(Heartbeat::NAME, "heartbeat");
    assert_eq!(TenantRenamed::NAME, "tenant.renamed");
}

#[test]
fn key_from_type_option_string_form() {
    let e = UserRegistered {
        user_id: 42,
        email: "a@b.c".into(),
    };
    assert_eq!(e.partition_key().as_deref(), Some("42"));
}

#[test]
fn key_from_type_option_ident_form() {
    let e = TenantRenamed {
        tenant: 7,
        name: "x".into(),
    };
    assert_eq!(e.partition_key().as_deref(), Some("7"));
}

#[test]
fn key_from_field_marker() {
    let e = OrderPlaced {
        order_id: "o-1".into(),
        total_cents: 100,
    };
    assert_eq!(e.partition_key().as_deref(), Some("o-1"));
}

#[test]
fn optional_key_field() {
    assert_eq!(
        MaybeKeyed { account: Some(9) }.partition_key().as_deref(),
        Some("9")
    );
    assert_eq!(MaybeKeyed { account: None }.partition_key(), None);
}

#[test]
fn tuple_struct_key_by_index() {
    assert_eq!(
        TupleKeyed("a".into(), 5).partition_key().as_deref(),
        Some("5")
    );
}

#[test]
fn unkeyed_events() {
    assert_eq!(Heartbeat.partition_key(), None);
    assert_eq!(HTTPRequestSent { path: "/".into() }.partition_key(), None);
    assert_eq!(PaymentState::Captured.partition_key(), None);
}

#[test]
fn generic_event_implements_event() {
    assert_eq!(<Wrapped<u8>>::NAME, "wrapped.generic");
    assert_eq!(Wrapped { inner: 1u8 }.partition_key(), None);
}

#[test]
fn crate_override() {
    assert_eq!(ExplicitCrate::NAME, "explicit.crate");
}

#[test]
fn registry_knows_derived_events() {
    let registry = EventRegistry::global();
    for name in [
        "user.registered",
        "order.placed",
        "http.request.sent",
        "tenant.renamed",
        "maybe.keyed",
        "tuple.keyed",
        "heartbeat",
        "other.heartbeat",
        "payment.state",
        "explicit.crate",
    ] {
        assert!(registry.contains(name), "{name} not registered");
    }
    // Generic types cannot be registered.
    assert!(!registry.contains("wrapped.generic"));
    assert!(registry.names().windows(2).all(|w| w[0] < w[1]));
    assert_eq!(other_module::Heartbeat::NAME, "other.heartbeat");
    registry.check().unwrap();
}

#[test]
fn registry_decodes_by_name() {
    let original = UserRegistered {
        user_id: 1,
        email: "x@y.z".into(),
    };
    let envelope = Envelope::from_event(&original).unwrap();
    assert_eq!(envelope.name, "user.registered");
    assert_eq!(envelope.version, 2);
    assert_eq!(envelope.key.as_deref(), Some("1"));

    let any = EventRegistry::global().decode_envelope(&envelope).unwrap();
    assert_eq!(any.name(), "user.registered");
    assert_eq!(any.partition_key().as_deref(), Some("1"));
    assert_eq!(any.downcast_ref::<UserRegistered>(), Some(&original));

    let state = Envelope::from_event(&PaymentState::Authorized { amount: 3 }).unwrap();
    let any = EventRegistry::global().decode_envelope(&state).unwrap();
    assert_eq!(
        any.downcast_ref::<PaymentState>(),
        Some(&PaymentState::Authorized { amount: 3 })
    );
}
