//! Cross-crate end-to-end tests for eventbus.
//!
//! The tests live in `tests/tests/`; this library is intentionally empty.
//! `compat_clients.rs` starts `eventbus-broker` in-process and runs the real-client
//! suites in `compat/` (pika, amqplib) against it over TCP.
