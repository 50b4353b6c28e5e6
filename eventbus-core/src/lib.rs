//! # eventbus-core
//!
//! The broker-agnostic framework behind `eventbus`: typed events, the handler
//! pipeline, key-ordered workers and the transport contract.
//!
//! # Layout
//! - [`event`]: the [`Event`] trait, the wire [`Envelope`], [`Headers`] and the
//!   [`EventRegistry`] that restores type-erased events by name.
//! - [`handler`]: [`Handle<E>`] (one per event type), [`Handler`] (a group of
//!   them, usually derived), [`Context`], [`HandleError`].
//! - [`middleware`]: tower layers — tracing, timeout, retry, panic recovery,
//!   dead-lettering. Each is a `Layer` + `Service` pair.
//! - [`pipeline`]: assembles the layers around a handler.
//! - [`worker`]: key-ordered partitioned workers with bounded queues.
//! - [`transport`]: the [`Publisher`]/[`Subscriber`] contract and the
//!   always-built [`MemoryTransport`].
//! - [`bus`]: [`EventBus`], which ties it together.
//! - [`observe`]: metrics (the `metrics` facade), the gauge sampler, the
//!   Prometheus endpoint (feature `prometheus`), OpenTelemetry (feature `otel`).
//! - `dashboard` (feature `dashboard`): the framework dashboard (axum router).
//! - `testing` (feature `test-util`): the conformance kit every transport runs.

#[allow(unused_extern_crates)]
extern crate self as eventbus_core;

pub mod bus;
#[cfg(feature = "dashboard")]
pub mod dashboard;
pub mod event;
pub mod handler;
pub mod middleware;
pub mod observe;
pub mod pipeline;
pub mod transport;
pub mod worker;

#[cfg(feature = "test-util")]
pub mod testing;

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub mod inbox;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub mod migrate;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub mod outbox;

#[doc(hidden)]
pub mod __private;

pub use bus::{EventBus, EventPublisher, RunningBus, StartError, WaitIdleError};
pub use event::{
    header, AnyEvent, DecodeError, EncodeError, Envelope, Event, EventRegistry, Headers,
};
pub use handler::{
    handler_fn, Backoff, Context, FailureKind, Handle, HandleError, Handler, HandlerConfig,
    Ordering, Permanent, RetryPolicy,
};
pub use transport::{
    memory::MemoryTransport, Acker, Delivery, DeliveryAcker, Publisher, Subscriber, Subscription,
    SubscriptionSpec, Transport, TransportError, TransportFuture,
};

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use inbox::{Inbox, InboxConfig, InboxLayer};
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use outbox::{Outbox, OutboxConfig, Relay, RelayConfig};

/// Derive macros (re-exported so `use eventbus_core::Event` brings trait and derive).
pub use eventbus_macros::{Event, Handler};

/// The error currency passed between layers and returned by handlers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`BoxError`].
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// sqlx, re-exported so applications use the same version as the outbox and inbox.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use sqlx;

/// `async_trait`, re-exported so handler impls need no extra dependency.
pub use async_trait::async_trait;
