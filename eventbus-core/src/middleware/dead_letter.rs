//! Decides what a failed attempt leads to: another attempt later, or a
//! dead letter. Never an error, and never a sleep: waiting for the next
//! attempt is the worker's job (it parks the message's key meanwhile, so
//! the other keys keep flowing).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::observe::HandlerMetrics;
use crate::{header, Context, Envelope, HandleError, RetryPolicy};

/// What became of a delivery after the pipeline ran.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A handler succeeded (or skipped a duplicate): ack it.
    Handled,
    /// Retries ran out or the failure is permanent: move this envelope (the
    /// original with failure headers) to the dead-letter destination.
    /// (Boxed: the outcome travels back through every layer, and the common
    /// case should not carry an envelope's worth of bytes.)
    DeadLetter(Box<Envelope>),
    /// The attempt failed and may succeed later: try again (with
    /// [`Context::next_attempt`]) after this delay.
    Retry {
        /// How long to wait before the next attempt (the retry policy's backoff).
        after: Duration,
    },
}

/// Catches a failed attempt's error. While the retry policy allows and the
/// error is retryable ([`HandleError::is_retryable`]) it answers
/// [`Outcome::Retry`] with the backoff delay; otherwise
/// [`Outcome::DeadLetter`] with the error, failure kind, attempt count and
/// group recorded in the headers (`x-eventbus-*`).
///
/// With [`DeadLetterLayer::with_metrics`] it also records each attempt's
/// outcome and duration (see [`crate::observe`]).
#[derive(Debug, Clone, Default)]
pub struct DeadLetterLayer {
    retry: Option<RetryPolicy>,
    metrics: Option<Arc<HandlerMetrics>>,
}

impl DeadLetterLayer {
    /// The layer without retries: the first failure dead-letters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The layer asking for retries as `policy` allows.
    pub fn with_retry(policy: RetryPolicy) -> Self {
        Self {
            retry: Some(policy),
            metrics: None,
        }
    }

    /// Records every attempt's outcome and duration in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<HandlerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl<S> Layer<S> for DeadLetterLayer {
    type Service = DeadLetter<S>;
    fn layer(&self, inner: S) -> DeadLetter<S> {
        DeadLetter {
            inner,
            retry: self.retry,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`DeadLetterLayer`].
#[derive(Debug, Clone)]
pub struct DeadLetter<S> {
    inner: S,
    retry: Option<RetryPolicy>,
    metrics: Option<Arc<HandlerMetrics>>,
}

/// The dead-letter copy of `cx`'s envelope for `error`.
pub fn dead_letter_envelope(cx: &Context, error: &HandleError) -> Envelope {
    let mut env = cx.envelope().clone();
    env.headers
        .insert(header::DEAD_LETTER_ERROR, error.to_string());
    env.headers
        .insert(header::DEAD_LETTER_REASON, error.kind().as_str());
    env.headers.insert(
        header::DEAD_LETTER_ATTEMPTS,
        cx.attempts_made().max(1).to_string(),
    );
    env.headers.insert(header::DEAD_LETTER_GROUP, cx.group());
    env
}

// ===== impl DeadLetter =====

impl<S> Service<Context> for DeadLetter<S>
where
    S: Service<Context, Response = (), Error = HandleError>,
{
    type Response = Outcome;
    type Error = HandleError;
    type Future = DeadLetterFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Context) -> Self::Future {
        DeadLetterFuture {
            started: self.metrics.as_ref().map(|_| Instant::now()),
            metrics: self.metrics.clone(),
            fut: self.inner.call(req.clone()),
            req,
            retry: self.retry,
        }
    }
}

pin_project! {
    /// The future of [`DeadLetter`].
    pub struct DeadLetterFuture<F> {
        #[pin]
        fut: F,
        req: Context,
        retry: Option<RetryPolicy>,
        metrics: Option<Arc<HandlerMetrics>>,
        started: Option<Instant>,
    }
}

impl<F> Future for DeadLetterFuture<F>
where
    F: Future<Output = Result<(), HandleError>>,
{
    type Output = Result<Outcome, HandleError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = match this.fut.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) => Outcome::Handled,
            Poll::Ready(Err(e)) => decide(this.req, *this.retry, e),
        };
        if let (Some(m), Some(started)) = (this.metrics, this.started) {
            m.record(&this.req.envelope().name, started.elapsed(), &outcome);
        }
        Poll::Ready(Ok(outcome))
    }
}

/// What a failed attempt leads to.
fn decide(req: &Context, retry: Option<RetryPolicy>, e: HandleError) -> Outcome {
    if let Some(policy) = retry {
        if e.is_retryable() && req.attempt() < policy.max_attempts {
            let after = policy.backoff.delay(req.attempt());
            tracing::warn!(
                error = %e,
                attempt = req.attempt(),
                max_attempts = policy.max_attempts,
                retry_in_ms = after.as_millis() as u64,
                "handler attempt failed; retrying later"
            );
            return Outcome::Retry { after };
        }
    }
    tracing::error!(
        error = %e,
        attempts = req.attempts_made(),
        "giving up on message; dead-lettering it"
    );
    Outcome::DeadLetter(Box::new(dead_letter_envelope(req, &e)))
}
