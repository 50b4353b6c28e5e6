//! Integration tests over real TCP with lapin.

mod support;

mod compat_regressions;
mod confirms;
mod dead_letter;
mod dead_letter_cycles;
mod durability_definitions;
mod errors;
mod handshake;
mod permissions;
mod protocol_gaps;
mod publish_consume;
mod qos;
mod routing;
mod teardown;
mod ttl;
mod tx;
