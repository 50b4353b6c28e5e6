//! Assembles the middleware stack around one handler.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::future::BoxFuture;
use tower::util::BoxCloneService;
use tower::ServiceBuilder;
use tower_layer::Layer;
use tower_service::Service;

use crate::middleware::{
    CatchPanic, CatchPanicLayer, DeadLetter, DeadLetterLayer, Outcome, Timeout, Trace, TraceLayer,
};
use crate::{Context, HandleError, Handler, HandlerConfig};

/// The innermost service: the user's handler, type-erased.
pub type HandlerService = BoxCloneService<Context, (), HandleError>;

/// The standard stack, outermost first (see [`crate::middleware`]). One call
/// is one attempt; the dead-letter layer answers [`Outcome::Retry`] while
/// the retry policy allows, and the worker runs the next attempt later.
type Stack = Trace<DeadLetter<Timeout<CatchPanic<Attempt>>>>;

/// A complete pipeline: takes a delivery's context, answers what to do with it.
///
/// The standard layers are composed statically: one delivery costs no
/// allocation for the pipeline itself beyond the handler's own future.
#[derive(Clone)]
pub struct PipelineService {
    inner: Stack,
}

impl std::fmt::Debug for PipelineService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineService").finish_non_exhaustive()
    }
}

impl Service<Context> for PipelineService {
    type Response = Outcome;
    type Error = HandleError;
    type Future = <Stack as Service<Context>>::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: Context) -> Self::Future {
        self.inner.call(cx)
    }
}

/// One attempt's innermost service: the handler directly, or behind the
/// type-erased user (and inbox) layers when there are any.
#[derive(Clone)]
pub struct Attempt(AttemptKind);

#[derive(Clone)]
enum AttemptKind {
    Direct(HandlerCall),
    Layered(HandlerService),
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layered = matches!(self.0, AttemptKind::Layered(_));
        f.debug_struct("Attempt")
            .field("layered", &layered)
            .finish()
    }
}

impl Service<Context> for Attempt {
    type Response = ();
    type Error = HandleError;
    type Future = BoxFuture<'static, Result<(), HandleError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        match &mut self.0 {
            AttemptKind::Direct(s) => s.poll_ready(cx),
            AttemptKind::Layered(s) => s.poll_ready(cx),
        }
    }

    fn call(&mut self, cx: Context) -> Self::Future {
        match &mut self.0 {
            AttemptKind::Direct(s) => s.call(cx),
            AttemptKind::Layered(s) => s.call(cx),
        }
    }
}

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

/// A layer as a shareable function over the type-erased handler service.
pub type SharedLayerFn = Arc<dyn Fn(HandlerService) -> HandlerService + Send + Sync>;

/// Builds a handler's pipeline: the standard policies from its
/// [`HandlerConfig`] plus any user layers, which run inside each attempt
/// (innermost, around the handler), in the order added (first = outermost).
pub struct PipelineBuilder {
    config: HandlerConfig,
    handler: Arc<dyn Handler>,
    layers: Vec<LayerFn>,
    /// The inbox layer, applied when `config.inbox` is set.
    inbox: Option<LayerFn>,
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
            inbox: None,
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

    /// Runs every attempt inside an inbox transaction (usually
    /// `inbox.layer()` from `eventbus_core::inbox::Inbox`), around the user
    /// layers and the handler, inside the timeout and panic recovery (so a
    /// timed-out or panicking attempt rolls back). Sets
    /// [`HandlerConfig::inbox`].
    pub fn inbox<L>(mut self, layer: L) -> Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service: Service<Context, Response = (), Error = HandleError> + Clone + Send + 'static,
        <L::Service as Service<Context>>::Future: Send + 'static,
    {
        self.config.inbox = true;
        self.inbox = Some(Box::new(move |s| BoxCloneService::new(layer.layer(s))));
        self
    }

    /// Whether an inbox layer has been given.
    pub fn has_inbox_layer(&self) -> bool {
        self.inbox.is_some()
    }

    /// Like [`PipelineBuilder::inbox`] with a shared layer factory (the
    /// bus-wide inbox of [`crate::EventBus::inbox`]).
    pub fn inbox_shared(mut self, layer: SharedLayerFn) -> Self {
        self.config.inbox = true;
        self.inbox = Some(Box::new(move |s| layer(s)));
        self
    }

    /// Assembles the stack.
    ///
    /// # Panics
    /// If [`HandlerConfig::inbox`] is set but no inbox layer was given
    /// ([`PipelineBuilder::inbox`]): the handler asked for deduplication
    /// that nothing could provide.
    pub fn build(self) -> (HandlerConfig, PipelineService) {
        // Without a recorder the handles would be no-ops: skip them (and the clock).
        let metrics = crate::observe::recorder_installed().then(|| {
            Arc::new(crate::observe::HandlerMetrics::new(
                &self.config.group,
                self.handler.events(),
            ))
        });
        let call = HandlerCall::new(self.handler);
        let config = self.config;
        let inner = if self.layers.is_empty() && !config.inbox {
            // No layer needs the type-erased service: call the handler directly.
            Attempt(AttemptKind::Direct(call))
        } else {
            let mut inner: HandlerService = BoxCloneService::new(call);
            for l in self.layers.iter().rev() {
                inner = l(inner);
            }
            if config.inbox {
                let inbox = self.inbox.as_ref().unwrap_or_else(|| {
                    panic!(
                        "handler group `{}` has the inbox enabled but no inbox layer was configured \
                         (PipelineBuilder::inbox(inbox.layer()))",
                        config.group
                    )
                });
                inner = inbox(inner);
            }
            Attempt(AttemptKind::Layered(inner))
        };
        let attempt = Timeout::optional(CatchPanicLayer::new().layer(inner), config.timeout);
        let inner = ServiceBuilder::new()
            .layer(TraceLayer::new())
            .layer(match metrics {
                Some(m) => DeadLetterLayer::with_retry(config.retry).with_metrics(m),
                None => DeadLetterLayer::with_retry(config.retry),
            })
            .service(attempt);
        (config, PipelineService { inner })
    }
}
