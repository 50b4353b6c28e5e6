//! Code generation: one module per derive. Each `derive` function runs
//! parse → validate → emit and, when anything failed, emits the errors
//! together with a fallback impl so the mistake produces one error rather
//! than a cascade of "trait not implemented" errors at every use site.

pub mod event;
pub mod handler;
