//! Generated code stays quiet under strict lints.
#![forbid(unsafe_code)]
#![deny(
    warnings,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_qualifications,
    rust_2018_idioms,
    non_camel_case_types,
    dead_code
)]

use eventbus_core::{BoxError, Context, Event, Handle, Handler};
use serde::{Deserialize, Serialize};

/// A documented event.
#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "strict.event-name", key = "id")]
pub struct StrictEvent {
    /// Key.
    pub id: u64,
}

/// A documented handler.
#[derive(Debug, Handler)]
#[handler(group = "strict", events(StrictEvent))]
pub struct StrictHandler;

impl Handle<StrictEvent> for StrictHandler {
    async fn handle(&self, _e: StrictEvent, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

fn main() {
    assert_eq!(StrictEvent::NAME, "strict.event-name");
    assert_eq!(StrictHandler.events(), vec!["strict.event-name"]);
}
