use eventbus_core::{BoxError, Context, Event, Handle, Handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
struct UserRegistered {
    #[event(key)]
    user_id: u64,
}

#[derive(Debug, Event, Serialize, Deserialize)]
struct OrderPlaced;

#[derive(Handler)]
#[handler(
    group = "email-service",
    events(UserRegistered, OrderPlaced),
    concurrency = 4,
    ordering = "key",
    max_attempts = 5,
    backoff_ms = 100,
    max_backoff_ms = 10000,
    jitter = true,
    timeout_ms = 30000,
    prefetch = 256,
    partitions = 8,
    crate = "::eventbus_core",
)]
struct Mailer;

impl Handle<UserRegistered> for Mailer {
    async fn handle(&self, _e: UserRegistered, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

impl Handle<OrderPlaced> for Mailer {
    async fn handle(&self, _e: OrderPlaced, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

#[derive(Handler)]
#[handler(group = "unordered", events(OrderPlaced), ordering = unordered, timeout = "none")]
struct Minimal;

impl Handle<OrderPlaced> for Minimal {
    async fn handle(&self, _e: OrderPlaced, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

fn main() {
    assert_eq!(Mailer.events(), vec!["user.registered", "order.placed"]);
    let mut expected = eventbus_core::HandlerConfig::new("email-service");
    expected.concurrency = 4;
    expected.partitions = 8;
    assert_eq!(Mailer.config(), expected);
    assert_eq!(Minimal.config().timeout, None);
}
