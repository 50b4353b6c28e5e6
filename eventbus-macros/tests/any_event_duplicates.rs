//! Two event types with one name (in different modules, where the compiler
//! cannot see it): typetag's registry holds both, and the `EventRegistry`
//! that reads it reports the name, refuses to decode it, and the bus refuses
//! to start. Its own test binary: the duplicate is process-wide.

use eventbus_core::{AnyEvent, DecodeError, EventBus, EventRegistry, MemoryTransport, StartError};
use serde::{Deserialize, Serialize};

mod billing {
    use super::*;
    #[derive(Debug, eventbus_core::Event, Serialize, Deserialize)]
    #[event(name = "invoice.sent")]
    pub struct InvoiceSent {
        pub id: u64,
    }
}

mod mailing {
    use super::*;
    #[derive(Debug, eventbus_core::Event, Serialize, Deserialize)]
    #[event(name = "invoice.sent")]
    pub struct InvoiceSent {
        pub to: String,
    }
}

#[derive(Debug, eventbus_core::Event, Serialize, Deserialize)]
#[event(name = "invoice.paid")]
struct InvoicePaid {
    id: u64,
}

#[test]
fn duplicate_names_are_reported() {
    let registry = EventRegistry::global();
    assert_eq!(registry.duplicates(), ["invoice.sent"]);
    assert!(registry.contains("invoice.sent"));
    let err = registry.check().unwrap_err();
    assert!(err.contains("`invoice.sent`"), "{err}");
    assert!(err.contains("more than one event type"), "{err}");
}

#[test]
fn a_duplicate_name_cannot_be_decoded_but_others_can() {
    let registry = EventRegistry::global();
    let err = registry
        .decode("invoice.sent", "application/json", br#"{"id":1}"#)
        .unwrap_err();
    assert!(
        matches!(&err, DecodeError::AmbiguousEvent(n) if n == "invoice.sent"),
        "{err:?}"
    );
    // typetag itself refuses the name too.
    let err =
        serde_json::from_str::<Box<dyn AnyEvent>>(r#"{"event":"invoice.sent","payload":{"id":1}}"#)
            .unwrap_err();
    assert!(err.to_string().contains("non-unique"), "{err}");

    let paid = registry
        .decode("invoice.paid", "application/json", br#"{"id":1}"#)
        .unwrap();
    assert_eq!(paid.downcast_ref::<InvoicePaid>().unwrap().id, 1);

    // Serializing either type still works: the name is what is ambiguous.
    let sent: Box<dyn AnyEvent> = Box::new(billing::InvoiceSent { id: 2 });
    assert_eq!(
        serde_json::to_string(&sent).unwrap(),
        r#"{"event":"invoice.sent","payload":{"id":2}}"#
    );
    let _ = mailing::InvoiceSent { to: "x".into() }.to;
}

#[tokio::test]
async fn the_bus_refuses_to_start() {
    let err = match EventBus::new(MemoryTransport::new()).start().await {
        Ok(_) => panic!("bus started with a duplicate event name"),
        Err(err) => err,
    };
    assert!(
        matches!(&err, StartError::DuplicateEventName(m) if m.contains("invoice.sent")),
        "{err}"
    );
}
