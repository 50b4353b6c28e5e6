//! A tracing span per delivery, continuing the publisher's W3C trace.

use std::fmt;
use std::task::{Context as TaskContext, Poll};

use futures_util::future::BoxFuture;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::{Context, HandleError};

/// A W3C `traceparent`: `00-<trace-id>-<parent-id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16-byte trace id.
    pub trace_id: u128,
    /// 8-byte id of the span that sent this.
    pub span_id: u64,
    /// Trace flags (bit 0 = sampled).
    pub flags: u8,
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

impl TraceParent {
    /// A new root trace (random ids, sampled).
    pub fn new_root() -> Self {
        Self {
            trace_id: fastrand::u128(1..),
            span_id: fastrand::u64(1..),
            flags: 1,
        }
    }

    /// Parses the header value; `None` if malformed (then a new root is started).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags.get(..2)?, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A child span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: fastrand::u64(1..),
            ..*self
        }
    }

    /// The trace context of the handler running on this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|t| *t).ok()
    }

    /// The traceparent to put on a message published now: a child of the
    /// current handler's span, or a new root.
    pub fn for_new_message() -> Self {
        Self::current().map(|t| t.child()).unwrap_or_else(Self::new_root)
    }

    /// Runs `fut` with `self` as the current trace context.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// Wraps all attempts of a delivery in an `eventbus.handle` span carrying
/// event, group, message id, key and the W3C trace id, and makes the
/// delivery's trace current so events published by the handler continue it.
#[derive(Debug, Clone, Default)]
pub struct TraceLayer;

impl TraceLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

/// See [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

// ===== impl Trace =====

impl<S, R> Service<Context> for Trace<S>
where
    S: Service<Context, Response = R, Error = HandleError>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = HandleError;
    type Future = BoxFuture<'static, Result<R, HandleError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Context) -> Self::Future {
        let env = req.envelope();
        let parent = env.headers.traceparent().and_then(TraceParent::parse);
        let trace = parent
            .map(|p| p.child())
            .unwrap_or_else(TraceParent::new_root);
        let span = tracing::info_span!(
            "eventbus.handle",
            event = %env.name,
            group = %req.group(),
            message_id = %env.id,
            key = env.key.as_deref().unwrap_or(""),
            trace_id = %format_args!("{:032x}", trace.trace_id),
            span_id = %format_args!("{:016x}", trace.span_id),
            parent_span_id = %format_args!("{:016x}", parent.map(|p| p.span_id).unwrap_or(0)),
            redelivered = req.redelivered(),
        );
        let fut = self.inner.call(req);
        Box::pin(trace.scope(fut).instrument(span))
    }
}
