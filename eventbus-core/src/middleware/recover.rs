//! Turns a panicking handler into a failed attempt.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use pin_project_lite::pin_project;
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
{
    type Response = R;
    type Error = HandleError;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Context) -> Self::Future {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(fut) => CatchPanicFuture::Running { fut },
            Err(p) => CatchPanicFuture::Panicked {
                message: Some(panic_message(&*p)),
            },
        }
    }
}

pin_project! {
    /// The future of [`CatchPanic`]: the inner future, with panics while
    /// polling it turned into [`HandleError::Panicked`].
    #[project = CatchPanicProj]
    pub enum CatchPanicFuture<F> {
        /// Polling the inner future.
        Running { #[pin] fut: F },
        /// Creating the inner future panicked.
        Panicked { message: Option<String> },
    }
}

impl<F, R> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<R, HandleError>>,
{
    type Output = Result<R, HandleError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project() {
            CatchPanicProj::Running { fut } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
                    Ok(poll) => poll,
                    Err(p) => Poll::Ready(Err(HandleError::Panicked(panic_message(&*p)))),
                }
            }
            CatchPanicProj::Panicked { message } => Poll::Ready(Err(HandleError::Panicked(
                message.take().unwrap_or_default(),
            ))),
        }
    }
}
