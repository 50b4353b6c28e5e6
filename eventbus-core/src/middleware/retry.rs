//! Retries failed attempts with exponential backoff and jitter.

use std::task::{Context as TaskContext, Poll};

use futures_util::future::BoxFuture;
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

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            policy: self.policy,
        }
    }
}

/// See [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
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
    type Future = BoxFuture<'static, Result<R, HandleError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Context) -> Self::Future {
        // The first attempt uses the service that was polled ready; a clone
        // is kept for later attempts (the future must be 'static).
        let first = self.inner.call(req.clone());
        let mut again = self.inner.clone();
        let policy = self.policy;
        Box::pin(async move {
            let mut cx = req;
            let mut result = first.await;
            loop {
                match result {
                    Ok(r) => return Ok(r),
                    Err(e) if !e.is_retryable() || cx.attempt() >= policy.max_attempts => {
                        return Err(e)
                    }
                    Err(e) => {
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
                        result = match again.ready().await {
                            Ok(svc) => svc.call(cx.clone()).await,
                            Err(e) => Err(e),
                        };
                    }
                }
            }
        })
    }
}
