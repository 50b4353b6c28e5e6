use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "a.b", verison = 2)]
struct Many {
    #[event(key)]
    a: u64,
    #[event(key)]
    b: u64,
}

fn main() {}
