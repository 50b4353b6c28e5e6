use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(key = "id")]
enum Status {
    Up { id: u64 },
    Down { id: u64 },
}

fn main() {}
