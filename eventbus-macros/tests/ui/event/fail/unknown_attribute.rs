use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(nmae = "user.registered")]
struct UserRegistered {
    user_id: u64,
}

fn main() {}
