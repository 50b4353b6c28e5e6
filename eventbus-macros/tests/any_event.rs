//! `Box<dyn AnyEvent>` carried by name through typetag: every event shape
//! the derive accepts round-trips, and the registry decodes through the same
//! typetag registry.

use eventbus_core::{AnyEvent, DecodeError, Envelope, Event, EventRegistry};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "user.registered", version = 2, key = "user_id")]
struct UserRegistered {
    user_id: u64,
    email: String,
}

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "line.added", key = 0)]
struct LineAdded(String, u32);

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "amount.set")]
struct AmountSet(u64);

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "clock.ticked")]
struct ClockTicked;

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "payment.state", version = 3)]
enum PaymentState {
    Pending,
    Authorized { amount: u64 },
    Refunded(u64, String),
}

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "account.touched", key = "account")]
struct AccountTouched {
    account: Option<u64>,
}

/// Serializes `event` as `Box<dyn AnyEvent>`, checks the JSON, reads it
/// back, and checks the concrete value and the metadata survived.
fn round_trip<E: AnyEvent + Event + PartialEq>(event: E, json: &str) {
    let key = Event::partition_key(&event);
    let boxed: Box<dyn AnyEvent> = Box::new(event);
    let text = serde_json::to_string(&boxed).unwrap();
    assert_eq!(text, json);

    let back: Box<dyn AnyEvent> = serde_json::from_str(&text).unwrap();
    assert_eq!(back.name(), E::NAME);
    assert_eq!(back.version(), E::VERSION);
    assert_eq!(back.partition_key(), key);
    assert_eq!(back.downcast_ref::<E>(), boxed.downcast_ref::<E>());
    assert!(back.downcast_ref::<E>().is_some());

    // The `Send + Sync` object the registry hands out reads the same JSON.
    let back: Box<dyn AnyEvent + Send + Sync> = serde_json::from_str(&text).unwrap();
    assert_eq!(back.name(), E::NAME);
}

#[test]
fn struct_with_named_fields() {
    round_trip(
        UserRegistered {
            user_id: 7,
            email: "a@b.c".into(),
        },
        r#"{"event":"user.registered","payload":{"user_id":7,"email":"a@b.c"}}"#,
    );
}

#[test]
fn tuple_struct() {
    round_trip(
        LineAdded("sku-1".into(), 3),
        r#"{"event":"line.added","payload":["sku-1",3]}"#,
    );
}

#[test]
fn newtype_struct_of_a_number() {
    round_trip(AmountSet(42), r#"{"event":"amount.set","payload":42}"#);
}

#[test]
fn unit_struct() {
    round_trip(ClockTicked, r#"{"event":"clock.ticked","payload":null}"#);
}

#[test]
fn enum_variants_of_every_kind() {
    round_trip(
        PaymentState::Pending,
        r#"{"event":"payment.state","payload":"Pending"}"#,
    );
    round_trip(
        PaymentState::Authorized { amount: 5 },
        r#"{"event":"payment.state","payload":{"Authorized":{"amount":5}}}"#,
    );
    round_trip(
        PaymentState::Refunded(5, "damaged".into()),
        r#"{"event":"payment.state","payload":{"Refunded":[5,"damaged"]}}"#,
    );
}

#[test]
fn optional_key() {
    round_trip(
        AccountTouched { account: Some(9) },
        r#"{"event":"account.touched","payload":{"account":9}}"#,
    );
    round_trip(
        AccountTouched { account: None },
        r#"{"event":"account.touched","payload":{"account":null}}"#,
    );
}

#[test]
fn the_tag_may_follow_the_payload() {
    let back: Box<dyn AnyEvent> =
        serde_json::from_str(r#"{"payload":{"Authorized":{"amount":1}},"event":"payment.state"}"#)
            .unwrap();
    assert_eq!(
        back.downcast_ref(),
        Some(&PaymentState::Authorized { amount: 1 })
    );
}

#[test]
fn a_list_of_mixed_events_round_trips() {
    let events: Vec<Box<dyn AnyEvent>> = vec![
        Box::new(AmountSet(1)),
        Box::new(ClockTicked),
        Box::new(LineAdded("a".into(), 1)),
        Box::new(PaymentState::Pending),
    ];
    let text = serde_json::to_string(&events).unwrap();
    let back: Vec<Box<dyn AnyEvent>> = serde_json::from_str(&text).unwrap();
    let names: Vec<_> = back.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        ["amount.set", "clock.ticked", "line.added", "payment.state"]
    );
    assert_eq!(back[2].downcast_ref(), Some(&LineAdded("a".into(), 1)));
}

#[test]
fn registry_lists_what_typetag_knows() {
    let registry = EventRegistry::global();
    for name in [
        "user.registered",
        "line.added",
        "amount.set",
        "clock.ticked",
        "payment.state",
        "account.touched",
    ] {
        assert!(registry.contains(name), "{name} missing");
    }
    assert!(!registry.contains("no.such.event"));
    assert_eq!(registry.duplicates(), &[] as &[&str]);
    registry.check().unwrap();
}

/// The registry's decode by name gives what `from_str` of the tagged JSON
/// gives, for each shape.
#[test]
fn registry_decodes_each_shape_by_name() {
    fn check<E: AnyEvent + Event + PartialEq>(event: E) {
        let envelope = Envelope::from_event(&event).unwrap();
        let decoded = EventRegistry::global()
            .decode_envelope(&envelope)
            .unwrap_or_else(|e| panic!("{}: {e}", E::NAME));
        assert_eq!(decoded.downcast_ref::<E>(), Some(&event));
        assert_eq!(decoded.partition_key(), envelope.key);
        // `to_json` is the payload alone.
        assert_eq!(
            decoded.to_json(),
            serde_json::from_slice::<serde_json::Value>(&envelope.payload).unwrap()
        );
    }
    check(UserRegistered {
        user_id: 1,
        email: "x".into(),
    });
    check(LineAdded("k".into(), 2));
    check(AmountSet(3));
    check(ClockTicked);
    check(PaymentState::Refunded(1, "r".into()));
    check(PaymentState::Pending);
    check(AccountTouched { account: None });
}

#[test]
fn unknown_names_are_clear_errors() {
    let err = EventRegistry::global()
        .decode("no.such.event", "application/json", b"{}")
        .unwrap_err();
    assert!(
        matches!(&err, DecodeError::UnknownEvent(n) if n == "no.such.event"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "unknown event `no.such.event`");

    // typetag's own error names the unknown tag and what is known.
    let err =
        serde_json::from_str::<Box<dyn AnyEvent>>(r#"{"event":"no.such.event","payload":{}}"#)
            .unwrap_err()
            .to_string();
    assert!(err.contains("unknown variant `no.such.event`"), "{err}");
    assert!(err.contains("user.registered"), "{err}");
}

#[test]
fn another_version_is_a_clear_error() {
    let mut envelope = Envelope::from_event(&UserRegistered {
        user_id: 1,
        email: "x".into(),
    })
    .unwrap();
    envelope.version = 1;
    let err = EventRegistry::global()
        .decode_envelope(&envelope)
        .unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::UnsupportedVersion {
                expected: 2,
                found: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "event `user.registered` has version 1; this program knows version 2"
    );
}

#[test]
fn payloads_that_do_not_fit_name_the_event() {
    let registry = EventRegistry::global();
    let err = registry
        .decode("user.registered", "", br#"{"user_id":"seven","email":"x"}"#)
        .unwrap_err();
    assert!(matches!(err, DecodeError::Payload { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot decode event `user.registered`"),
        "{text}"
    );
    assert!(text.contains("invalid type"), "{text}");

    // Trailing bytes after the payload are an error, as with typed decoding.
    let err = registry
        .decode("amount.set", "application/json", b"1 2")
        .unwrap_err();
    assert!(matches!(err, DecodeError::Payload { .. }), "{err:?}");

    let err = registry
        .decode("amount.set", "application/msgpack", b"1")
        .unwrap_err();
    assert!(
        matches!(err, DecodeError::UnsupportedContentType { .. }),
        "{err:?}"
    );
}
