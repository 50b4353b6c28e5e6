//! The pure protocol layer: bytes ⇄ frames ⇄ methods. No sockets, no tokio, no broker state.
//!
//! Frame *syntax* is handled by `amq-protocol`; this module adds what a server needs on top of it:
//! a size check against the negotiated `frame-max` before a payload is buffered, a frame-end check,
//! and a bound on field-table nesting depth before the payload reaches amq-protocol's recursive
//! parser (see [`frame::check_nesting`]).

pub mod constants;
pub mod frame;
pub mod method;

pub use amq_protocol::protocol::{basic::AMQPProperties, AMQPClass};
pub use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
