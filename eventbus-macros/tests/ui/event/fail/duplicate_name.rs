use eventbus_core::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "user.registered")]
struct UserRegistered;

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "user.registered")]
struct UserSignedUp;

fn main() {}
