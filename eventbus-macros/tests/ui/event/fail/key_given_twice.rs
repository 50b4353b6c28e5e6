use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(key = "id")]
struct Both {
    id: u64,
    #[event(key)]
    other: u64,
}

fn main() {}
