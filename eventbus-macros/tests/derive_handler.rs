//! Behaviour of `#[derive(Handler)]`: config, events, dispatch.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::{
    BoxError, Context, Envelope, Event, Handle, HandleError, Handler, HandlerConfig, Ordering,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "user.registered", key = "user_id")]
struct UserRegistered {
    user_id: u64,
    email: String,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(key = "order_id")]
struct OrderPlaced {
    order_id: u64,
}

#[derive(Debug, Event, Serialize, Deserialize)]
struct NotHandled;

/// Records what it handled.
#[derive(Default, Handler)]
#[handler(
    group = "email-service",
    events(UserRegistered, OrderPlaced),
    concurrency = 4,
    ordering = "unordered",
    max_attempts = 3,
    backoff_ms = 50,
    max_backoff_ms = 2000,
    jitter = false,
    timeout_ms = 1500,
    prefetch = 32,
    partitions = 8
)]
struct Mailer {
    seen: Mutex<Vec<String>>,
}

impl Handle<UserRegistered> for Mailer {
    async fn handle(&self, e: UserRegistered, cx: &Context) -> Result<(), BoxError> {
        if e.email.is_empty() {
            return Err("no address".into());
        }
        self.seen.lock().unwrap().push(format!(
            "welcome {} ({}) key={:?}",
            e.email,
            e.user_id,
            cx.key()
        ));
        Ok(())
    }
}

impl Handle<OrderPlaced> for Mailer {
    async fn handle(&self, e: OrderPlaced, _cx: &Context) -> Result<(), BoxError> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("order {}", e.order_id));
        Ok(())
    }
}

/// Only the required options; the rest come from `HandlerConfig::new`.
#[derive(Handler)]
#[handler(group = "audit")]
#[handler(events(OrderPlaced), timeout = "none")]
struct Audit;

impl Handle<OrderPlaced> for Audit {
    async fn handle(&self, _e: OrderPlaced, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A generic handler.
#[derive(Handler)]
#[handler(group = "generic", events(OrderPlaced), ordering = key, inbox)]
struct Generic<T: Send + Sync + 'static> {
    _tag: T,
}

impl<T: Send + Sync + 'static> Handle<OrderPlaced> for Generic<T> {
    async fn handle(&self, _e: OrderPlaced, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

fn context_for(envelope: Envelope, group: &str) -> Context {
    Context::new(Arc::new(envelope), Arc::from(group), false)
}

#[test]
fn config_from_attributes() {
    let config = Mailer::default().config();
    let mut expected = HandlerConfig::new("email-service");
    expected.concurrency = 4;
    expected.ordering = Ordering::Unordered;
    expected.retry.max_attempts = 3;
    expected.retry.backoff.initial = Duration::from_millis(50);
    expected.retry.backoff.max = Duration::from_millis(2000);
    expected.retry.backoff.jitter = false;
    expected.timeout = Some(Duration::from_millis(1500));
    expected.prefetch = 32;
    expected.partitions = 8;
    assert_eq!(config, expected);
}

#[test]
fn config_defaults_and_split_attributes() {
    let mut expected = HandlerConfig::new("audit");
    expected.timeout = None;
    assert_eq!(Audit.config(), expected);

    let generic = Generic { _tag: 1u8 };
    let mut expected = HandlerConfig::new("generic");
    expected.inbox = true;
    assert_eq!(
        generic.config(),
        expected,
        "`inbox` alone turns the inbox on"
    );
    assert_eq!(generic.config().ordering, Ordering::ByKey);
}

#[test]
fn events_lists_names_in_order() {
    assert_eq!(
        Mailer::default().events(),
        vec!["user.registered", "order.placed"]
    );
    assert_eq!(Audit.events(), vec!["order.placed"]);
}

#[tokio::test]
async fn dispatch_calls_the_matching_handle_impl() {
    let mailer = Arc::new(Mailer::default());
    let registered = Envelope::from_event(&UserRegistered {
        user_id: 7,
        email: "a@b.c".into(),
    })
    .unwrap();
    let placed = Envelope::from_event(&OrderPlaced { order_id: 9 }).unwrap();

    mailer
        .clone()
        .dispatch(context_for(registered, "email-service"))
        .await
        .unwrap();
    mailer
        .clone()
        .dispatch(context_for(placed, "email-service"))
        .await
        .unwrap();

    assert_eq!(
        *mailer.seen.lock().unwrap(),
        vec![
            "welcome a@b.c (7) key=Some(\"7\")".to_owned(),
            "order 9".to_owned()
        ]
    );
}

#[tokio::test]
async fn unknown_event_is_rejected() {
    let envelope = Envelope::from_event(&NotHandled).unwrap();
    let err = Arc::new(Mailer::default())
        .dispatch(context_for(envelope, "email-service"))
        .await
        .unwrap_err();
    match &err {
        HandleError::UnknownEvent(name) => assert_eq!(name, "not.handled"),
        other => panic!("expected UnknownEvent, got {other:?}"),
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn bad_payload_is_a_decode_error() {
    let mut envelope = Envelope::from_event(&OrderPlaced { order_id: 1 }).unwrap();
    envelope.payload = Vec::from(&b"{not json"[..]).into();
    let mailer = Arc::new(Mailer::default());
    let err = mailer
        .clone()
        .dispatch(context_for(envelope, "email-service"))
        .await
        .unwrap_err();
    assert!(matches!(err, HandleError::Decode(_)), "got {err:?}");
    assert!(!err.is_retryable());
    assert!(mailer.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn handler_error_is_reported() {
    let envelope = Envelope::from_event(&UserRegistered {
        user_id: 1,
        email: String::new(),
    })
    .unwrap();
    let err = Arc::new(Mailer::default())
        .dispatch(context_for(envelope, "email-service"))
        .await
        .unwrap_err();
    assert!(matches!(err, HandleError::Handler(_)), "got {err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn works_as_a_trait_object() {
    let handler: Arc<dyn Handler> = Arc::new(Audit);
    let envelope = Envelope::from_event(&OrderPlaced { order_id: 2 }).unwrap();
    handler
        .dispatch(context_for(envelope, "audit"))
        .await
        .unwrap();
}
