use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct NoDebug {
    id: u64,
}

fn main() {}
