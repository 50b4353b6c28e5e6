#![doc = include_str!("../README.md")]
//!
//! This crate is the facade: it re-exports [`eventbus_core`] (events,
//! handlers, pipeline, workers, transports) and the derive macros.

#[allow(unused_extern_crates)]
extern crate self as eventbus;

pub use eventbus_core::*;

#[cfg(feature = "embedded")]
pub mod embedded;
