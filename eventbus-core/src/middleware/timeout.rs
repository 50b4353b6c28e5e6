//! Limits the time of one attempt.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
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
    /// `None`: no limit (the layer passes calls through).
    limit: Option<Duration>,
}

// ===== impl Timeout =====

impl<S> Timeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit: Some(limit),
        }
    }
    /// Wraps `inner` with an optional limit (`None` passes calls through).
    pub fn optional(inner: S, limit: Option<Duration>) -> Self {
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
{
    type Response = R;
    type Error = HandleError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Context) -> Self::Future {
        // The deadline counts from the start of the attempt; the timer itself
        // is only set up if the attempt does not finish in its first poll.
        let deadline = self.limit.map(|limit| (Instant::now(), limit));
        TimeoutFuture {
            fut: self.inner.call(req),
            deadline,
            sleep: None,
        }
    }
}

pin_project! {
    /// The future of [`Timeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        fut: F,
        // (attempt start, limit)
        deadline: Option<(Instant, Duration)>,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F, R> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<R, HandleError>>,
{
    type Output = Result<R, HandleError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Like `tokio::time::timeout`: the attempt's own result wins if both are ready.
        if let Poll::Ready(r) = this.fut.poll(cx) {
            return Poll::Ready(r);
        }
        let Some((start, limit)) = *this.deadline else {
            return Poll::Pending;
        };
        let sleep = this.sleep.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(
                start.checked_add(limit).unwrap_or_else(far_future),
            ))
        });
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(HandleError::Timeout(limit))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A deadline that never comes (about 30 years), as `tokio::time` uses for
/// durations too large to add.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
