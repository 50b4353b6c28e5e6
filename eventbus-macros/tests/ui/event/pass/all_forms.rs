use eventbus_core::{Event, EventRegistry};
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "user.registered", version = 2, key = "user_id")]
pub struct UserRegistered {
    pub user_id: u64,
    pub email: String,
}

#[derive(Debug, Event, Serialize, Deserialize)]
pub struct OrderPlaced {
    #[event(key)]
    pub order_id: u64,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(key = account)]
pub struct Optional {
    pub account: Option<String>,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(key = 0)]
pub struct Tuple(pub u32);

#[derive(Debug, Event, Serialize, Deserialize)]
pub struct Unit;

#[derive(Debug, Event, Serialize, Deserialize)]
pub enum Status {
    Up,
    Down { reason: String },
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "generic.event")]
pub struct Generic<T> {
    pub value: T,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(crate = "eventbus_core")]
#[event(name = "split.attributes")]
pub struct Split;

fn main() {
    assert_eq!(UserRegistered::NAME, "user.registered");
    assert_eq!(OrderPlaced::NAME, "order.placed");
    assert_eq!(<Generic<u8>>::NAME, "generic.event");
    assert_eq!(Status::NAME, "status");
    assert!(EventRegistry::global().contains("split.attributes"));
    assert!(!EventRegistry::global().contains("generic.event"));
}
