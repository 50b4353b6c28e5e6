use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "user registered")]
struct Spaced;

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "user.#")]
struct Wildcard;

fn main() {}
