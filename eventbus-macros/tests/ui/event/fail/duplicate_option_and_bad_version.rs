use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "a.b", name = "c.d", version = 0)]
struct Twice;

fn main() {}
