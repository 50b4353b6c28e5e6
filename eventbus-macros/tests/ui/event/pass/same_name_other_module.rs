// Duplicate names in different modules are not visible to the compiler;
// `EventRegistry::check()` reports them at run time.
use eventbus_core::{Event, EventRegistry};
use serde::{Deserialize, Serialize};

mod a {
    use super::*;
    #[derive(Debug, Event, Serialize, Deserialize)]
    #[event(name = "shared.name")]
    pub struct First;
}

mod b {
    use super::*;
    #[derive(Debug, Event, Serialize, Deserialize)]
    #[event(name = "shared.name")]
    pub struct Second;
}

fn main() {
    assert_eq!(a::First::NAME, b::Second::NAME);
    let err = EventRegistry::global().check().unwrap_err();
    assert!(err.contains("shared.name"), "{err}");
}
