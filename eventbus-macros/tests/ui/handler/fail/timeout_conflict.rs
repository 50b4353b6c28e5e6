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
#[handler(group = "email-service", events(UserRegistered), timeout_ms = 100, timeout = "none")]
struct Mailer;

#[derive(Handler)]
#[handler(group = "other", events(UserRegistered), timeout = "5s")]
struct Other;

impl Handle<UserRegistered> for Other {
    async fn handle(&self, _e: UserRegistered, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

impl Handle<UserRegistered> for Mailer {
    async fn handle(&self, _e: UserRegistered, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

fn main() {}

