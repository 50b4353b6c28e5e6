//! A handler from an async closure over the raw [`Context`].

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Context, HandleError, Handler, HandlerConfig};
use crate::BoxError;

/// A [`Handler`] made by [`handler_fn`].
pub struct FnHandler<F> {
    config: HandlerConfig,
    events: Vec<&'static str>,
    f: F,
}

impl<F> std::fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnHandler")
            .field("config", &self.config)
            .field("events", &self.events)
            .finish()
    }
}

/// A handler for `events` that runs `f` with each delivery's context
/// (decode the payload yourself with `cx.envelope().decode::<E>()`).
/// Useful for generic tooling and tests; services normally derive `Handler`.
pub fn handler_fn<F, Fut>(config: HandlerConfig, events: Vec<&'static str>, f: F) -> FnHandler<F>
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    FnHandler { config, events, f }
}

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn config(&self) -> HandlerConfig {
        self.config.clone()
    }
    fn events(&self) -> Vec<&'static str> {
        self.events.clone()
    }
    fn dispatch(self: Arc<Self>, cx: Context) -> BoxFuture<'static, Result<(), HandleError>> {
        if !self.events.contains(&&*cx.envelope().name) {
            let name = cx.envelope().name.to_string();
            return Box::pin(async move { Err(HandleError::UnknownEvent(name)) });
        }
        let fut = (self.f)(cx);
        Box::pin(async move { fut.await.map_err(HandleError::from_handler) })
    }
}
