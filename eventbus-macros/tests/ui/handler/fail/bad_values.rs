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
    group = "email service",
    events(UserRegistered),
    concurrency = 0,
    max_attempts = 0,
    backoff_ms = 500,
    max_backoff_ms = 100,
    prefetch = 70000,
    partitions = 1025,
)]
struct Mailer;

impl Handle<UserRegistered> for Mailer {
    async fn handle(&self, _e: UserRegistered, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

fn main() {}

