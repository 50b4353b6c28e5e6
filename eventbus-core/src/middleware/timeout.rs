//! Limits the time of one attempt.

use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tower_layer::Layer;
use tower_service::Service;

use crate::{Context, HandleError};

/// Fails an attempt with [`HandleError::Timeout`] after `limit`.
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// A layer with the given limit.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, self.limit)
    }
}

/// See [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

// ===== impl Timeout =====

impl<S> Timeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// Unwraps.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<Context> for Timeout<S>
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
        let limit = self.limit;
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => Err(HandleError::Timeout(limit)),
            }
        })
    }
}
