//! Retries failed attempts with exponential backoff and jitter.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context as TaskContext, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::{Context, HandleError, RetryPolicy};

/// Retries retryable failures ([`HandleError::is_retryable`]) up to
/// `policy.max_attempts` attempts in total, sleeping `policy.backoff`
/// between them. The last error is returned when attempts run out.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// A layer with `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy }
    }
}

impl<S: Clone> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, self.policy)
    }
}

/// See [`RetryLayer`].
#[derive(Debug)]
pub struct Retry<S> {
    inner: S,
    /// A copy of `inner` (and the policy) for the later attempts of a
    /// delivery, shared with this service's futures: the first attempt
    /// costs no clone of the inner stack, only a delivery that fails copies
    /// it. Each clone of the service (each worker) gets its own, so workers
    /// share no reference count. (The mutex makes it shareable for services
    /// that are `Send` but not `Sync`; it is only taken to copy.)
    spare: Arc<Spare<S>>,
}

/// See [`Retry`].
#[derive(Debug)]
struct Spare<S> {
    service: Mutex<S>,
    policy: RetryPolicy,
}

impl<S: Clone> Spare<S> {
    fn service(&self) -> S {
        self.service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl<S: Clone> Retry<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self {
            spare: Arc::new(Spare {
                service: Mutex::new(inner.clone()),
                policy,
            }),
            inner,
        }
    }
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.spare.policy)
    }
}

// ===== impl Retry =====

impl<S, R> Service<Context> for Retry<S>
where
    S: Service<Context, Response = R, Error = HandleError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = HandleError;
    type Future = RetryFuture<S, S::Future, R>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Context) -> Self::Future {
        // The first attempt uses the service that was polled ready; later
        // attempts copy the spare (the future must be 'static).
        let fut = self.inner.call(req.clone());
        RetryFuture::First {
            fut,
            retry: Some((req, self.spare.clone())),
        }
    }
}

pin_project! {
    /// The future of [`Retry`]: the first attempt runs unboxed; only a
    /// delivery that needs a retry moves to a boxed retry loop.
    #[project = RetryProj]
    pub enum RetryFuture<S, F, R> {
        /// The first attempt.
        First {
            #[pin]
            fut: F,
            retry: Option<(Context, Arc<Spare<S>>)>,
        },
        /// Later attempts.
        Retrying { fut: BoxFuture<'static, Result<R, HandleError>> },
    }
}

impl<S, R> Future for RetryFuture<S, S::Future, R>
where
    S: Service<Context, Response = R, Error = HandleError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Output = Result<R, HandleError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                RetryProj::First { fut, retry } => {
                    let e = match ready!(fut.poll(cx)) {
                        Ok(r) => return Poll::Ready(Ok(r)),
                        Err(e) => e,
                    };
                    let (req, spare) = retry.take().expect("RetryFuture polled after completion");
                    let policy = spare.policy;
                    if !e.is_retryable() || req.attempt() >= policy.max_attempts {
                        return Poll::Ready(Err(e));
                    }
                    let fut = Box::pin(retry_after(e, req, spare.service(), policy));
                    self.set(RetryFuture::Retrying { fut });
                }
                RetryProj::Retrying { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}

/// Retries after the retryable failure `e` of attempt `cx.attempt()`.
async fn retry_after<S, R>(
    mut e: HandleError,
    mut cx: Context,
    mut svc: S,
    policy: RetryPolicy,
) -> Result<R, HandleError>
where
    S: Service<Context, Response = R, Error = HandleError>,
{
    loop {
        let delay = policy.backoff.delay(cx.attempt());
        tracing::warn!(
            error = %e,
            attempt = cx.attempt(),
            max_attempts = policy.max_attempts,
            retry_in_ms = delay.as_millis() as u64,
            "handler attempt failed; retrying"
        );
        tokio::time::sleep(delay).await;
        cx = cx.next_attempt();
        let result = match svc.ready().await {
            Ok(svc) => svc.call(cx.clone()).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => return Ok(r),
            Err(err) if !err.is_retryable() || cx.attempt() >= policy.max_attempts => {
                return Err(err)
            }
            Err(err) => e = err,
        }
    }
}
