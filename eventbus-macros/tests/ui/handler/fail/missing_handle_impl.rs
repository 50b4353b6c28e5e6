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
#[handler(group = "email-service", events(UserRegistered, OrderPlaced))]
struct Mailer;

impl Handle<UserRegistered> for Mailer {
    async fn handle(&self, _e: UserRegistered, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

fn main() {}

