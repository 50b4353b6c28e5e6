//! Handlers: typed `Handle<E>` implementations, grouped by `#[derive(Handler)]`.

mod config;
mod context;
mod error;
mod from_fn;

pub use config::{Backoff, HandlerConfig, Ordering, RetryPolicy};
pub use context::Context;
pub(crate) use context::ContextSlot;
pub use error::{FailureKind, HandleError, Permanent};
pub use from_fn::{handler_fn, FnHandler};

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::{BoxError, Event};

/// Handles one event type. Implement it once per event a handler accepts,
/// with a plain `async fn` (no macro needed):
///
/// ```
/// # use eventbus_core as eventbus;
/// use eventbus::{BoxError, Context, Event, Handle};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Event, Serialize, Deserialize)]
/// # struct UserRegistered { user_id: u64 }
/// struct Welcome;
///
/// impl Handle<UserRegistered> for Welcome {
///     async fn handle(&self, e: UserRegistered, cx: &Context) -> Result<(), BoxError> {
///         println!("welcome, user {} (attempt {})", e.user_id, cx.attempt());
///         Ok(())
///     }
/// }
/// ```
///
/// Return `Err` to fail the attempt: the pipeline retries it with backoff and
/// dead-letters it when the retry policy is exhausted. Panics count as
/// failures. Return [`HandleError::permanent`] for a failure no retry can
/// fix: it is dead-lettered at once.
///
/// The future must be `Send` (handlers run on a multi-threaded runtime). It
/// is not boxed: the derived [`Handler::dispatch`] holds it inline, so a
/// delivery costs one allocation for the handler call, not two.
pub trait Handle<E: Event>: Send + Sync + 'static {
    /// Handles one event.
    fn handle(&self, event: E, cx: &Context) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A subscribing component: a handler group and the events it accepts.
///
/// Derive it: `#[derive(Handler)] #[handler(group = "...", events(A, B))]`
/// generates [`Handler::config`], [`Handler::events`] and a
/// [`Handler::dispatch`] that decodes the envelope and calls the matching
/// [`Handle`] impl.
pub trait Handler: Send + Sync + 'static {
    /// Group, concurrency, ordering and retry policy.
    fn config(&self) -> HandlerConfig;

    /// Names of the events this handler subscribes to.
    fn events(&self) -> Vec<&'static str>;

    /// Decodes the envelope in `cx` and runs the matching `Handle` impl.
    fn dispatch(self: Arc<Self>, cx: Context) -> BoxFuture<'static, Result<(), HandleError>>;
}

/// Decodes `cx`'s envelope as `E` and calls `H`'s `Handle<E>` impl.
/// Used by `#[derive(Handler)]`'s generated `dispatch`.
pub async fn dispatch_to<E: Event, H: Handle<E> + ?Sized>(
    handler: &H,
    cx: &Context,
) -> Result<(), HandleError> {
    let event: E = cx.envelope().decode().map_err(HandleError::Decode)?;
    handler
        .handle(event, cx)
        .await
        .map_err(HandleError::from_handler)
}
