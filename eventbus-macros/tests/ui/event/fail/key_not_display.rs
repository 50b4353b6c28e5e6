use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(key = "tags")]
struct Tagged {
    tags: Vec<String>,
}

fn main() {}
