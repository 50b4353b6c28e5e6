use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
struct UserRegistered {
    #[event(rename = "id")]
    user_id: u64,
}

fn main() {}
