//! Turns a panicking handler into a failed attempt.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::task::{Context as TaskContext, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Context, HandleError};

/// Catches panics in the inner service (while creating or polling its
/// future) and returns [`HandleError::Panicked`] instead, so a worker never dies.
#[derive(Debug, Clone, Default)]
pub struct CatchPanicLayer;

impl CatchPanicLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// See [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

// ===== impl CatchPanic =====

impl<S, R> Service<Context> for CatchPanic<S>
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
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(fut) => Box::pin(AssertUnwindSafe(fut).catch_unwind().map(|r| match r {
                Ok(r) => r,
                Err(p) => Err(HandleError::Panicked(panic_message(&*p))),
            })),
            Err(p) => {
                let msg = panic_message(&*p);
                Box::pin(async move { Err(HandleError::Panicked(msg)) })
            }
        }
    }
}
