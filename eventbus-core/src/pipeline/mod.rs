//! Assembles the middleware stack around one handler.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::future::BoxFuture;
use tower::util::BoxCloneService;
use tower::ServiceBuilder;
use tower_layer::Layer;
use tower_service::Service;

use crate::middleware::{
    CatchPanicLayer, DeadLetterLayer, Outcome, RetryLayer, TimeoutLayer, TraceLayer,
};
use crate::{Context, HandleError, Handler, HandlerConfig};

/// The innermost service: the user's handler, type-erased.
pub type HandlerService = BoxCloneService<Context, (), HandleError>;

/// A complete pipeline: takes a delivery's context, answers what to do with it.
pub type PipelineService = BoxCloneService<Context, Outcome, HandleError>;

/// Calls [`Handler::dispatch`]; counts the attempt.
#[derive(Clone)]
pub struct HandlerCall {
    handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for HandlerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerCall")
            .field("group", &self.handler.config().group)
            .finish()
    }
}

impl HandlerCall {
    /// Wraps `handler`.
    pub fn new(handler: Arc<dyn Handler>) -> Self {
        Self { handler }
    }
}

impl Service<Context> for HandlerCall {
    type Response = ();
    type Error = HandleError;
    type Future = BoxFuture<'static, Result<(), HandleError>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, cx: Context) -> Self::Future {
        cx.record_attempt();
        self.handler.clone().dispatch(cx)
    }
}

type LayerFn = Box<dyn Fn(HandlerService) -> HandlerService + Send + Sync>;

/// Builds a handler's pipeline: the standard policies from its
/// [`HandlerConfig`] plus any user layers, which run inside each attempt
/// (innermost, around the handler), in the order added (first = outermost).
pub struct PipelineBuilder {
    config: HandlerConfig,
    handler: Arc<dyn Handler>,
    layers: Vec<LayerFn>,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("config", &self.config)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl PipelineBuilder {
    /// A builder for `handler` with its own config.
    pub fn new(handler: Arc<dyn Handler>) -> Self {
        Self {
            config: handler.config(),
            handler,
            layers: Vec::new(),
        }
    }

    /// Names of the events the handler subscribes to.
    pub fn events(&self) -> Vec<&'static str> {
        self.handler.events()
    }

    /// The configuration (change it with [`PipelineBuilder::config_mut`]).
    pub fn config(&self) -> &HandlerConfig {
        &self.config
    }

    /// Overrides parts of the handler's configuration.
    pub fn config_mut(&mut self) -> &mut HandlerConfig {
        &mut self.config
    }

    /// Adds a user layer around the handler.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service: Service<Context, Response = (), Error = HandleError> + Clone + Send + 'static,
        <L::Service as Service<Context>>::Future: Send + 'static,
    {
        self.layers
            .push(Box::new(move |s| BoxCloneService::new(layer.layer(s))));
        self
    }

    /// Assembles the stack.
    pub fn build(self) -> (HandlerConfig, PipelineService) {
        let mut inner: HandlerService = BoxCloneService::new(HandlerCall::new(self.handler));
        for l in self.layers.iter().rev() {
            inner = l(inner);
        }
        let config = self.config;
        let attempt: HandlerService = match config.timeout {
            Some(limit) => BoxCloneService::new(
                ServiceBuilder::new()
                    .layer(TimeoutLayer::new(limit))
                    .layer(CatchPanicLayer::new())
                    .service(inner),
            ),
            None => BoxCloneService::new(CatchPanicLayer::new().layer(inner)),
        };
        let service = ServiceBuilder::new()
            .layer(TraceLayer::new())
            .layer(DeadLetterLayer::new())
            .layer(RetryLayer::new(config.retry))
            .service(attempt);
        (config, BoxCloneService::new(service))
    }
}
