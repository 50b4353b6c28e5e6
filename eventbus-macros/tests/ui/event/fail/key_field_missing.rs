use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "user.registered", key = "user")]
struct UserRegistered {
    user_id: u64,
    email: String,
}

fn main() {}
