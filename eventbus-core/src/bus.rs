//! [`EventBus`]: registers handlers, runs their pipelines, publishes events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tower::util::BoxCloneService;
use tower_layer::Layer;
use tower_service::Service;

use crate::pipeline::{HandlerService, PipelineBuilder, SharedLayerFn};
use crate::transport::{Subscription, SubscriptionSpec, TakeReady, Transport, TransportError};
use crate::worker::{PartitionedWorkers, DEFAULT_WORKER_QUEUE};
use crate::{BoxError, Context, Envelope, Event, HandleError, Handler};

/// The entry point of a service: handlers are registered on it, then
/// [`EventBus::start`] subscribes every group and runs its workers.
///
/// ```
/// use eventbus_core::{BoxError, Context, Event, EventBus, Handle, Handler, MemoryTransport};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Event, Serialize, Deserialize)]
/// #[event(key = "user_id")]
/// struct UserRegistered { user_id: u64 }
///
/// #[derive(Handler)]
/// #[handler(group = "email", events(UserRegistered))]
/// struct Welcome;
///
/// impl Handle<UserRegistered> for Welcome {
///     async fn handle(&self, e: UserRegistered, _cx: &Context) -> Result<(), BoxError> {
///         println!("welcome, user {}", e.user_id);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut bus = EventBus::new(MemoryTransport::new());
/// bus.register(Welcome);
/// let running = bus.start().await.unwrap();
/// running.publish(&UserRegistered { user_id: 1 }).await.unwrap();
/// running.shutdown().await;
/// # });
/// ```
pub struct EventBus {
    transport: Arc<dyn Transport>,
    pipelines: Vec<PipelineBuilder>,
    worker_queue: usize,
    inbox: Option<SharedLayerFn>,
    shutdown_timeout: Duration,
}

/// How long [`RunningBus::shutdown`] waits for handlers by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("pipelines", &self.pipelines)
            .finish_non_exhaustive()
    }
}

/// Error starting the bus.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Two handlers registered the same group (they would split its events).
    #[error("handler group `{0}` registered twice; give each handler its own group")]
    DuplicateGroup(String),
    /// A handler wants the inbox but the bus has no inbox layer.
    #[error("handler group `{0}` uses the inbox but none is configured; call EventBus::inbox(inbox.layer())")]
    InboxNotConfigured(String),
    /// Two event types share a name.
    #[error("{0}")]
    DuplicateEventName(String),
    /// A subscription could not be opened.
    #[error("cannot subscribe group `{group}`: {source}")]
    Subscribe {
        /// The group.
        group: String,
        /// Why.
        #[source]
        source: TransportError,
    },
}

impl EventBus {
    /// A bus on `transport`.
    pub fn new<T: Transport>(transport: T) -> Self {
        Self::from_arc(Arc::new(transport))
    }

    /// A bus on a shared transport.
    pub fn from_arc(transport: Arc<dyn Transport>) -> Self {
        Self {
            transport,
            pipelines: Vec::new(),
            worker_queue: DEFAULT_WORKER_QUEUE,
            inbox: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// How long [`RunningBus::shutdown`] lets handlers in progress finish
    /// (default 30 s). Past it, they are abandoned and every message the
    /// bus still holds goes back to the transport for redelivery.
    pub fn shutdown_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Registers a handler with the standard pipeline.
    pub fn register<H: Handler>(&mut self, handler: H) -> &mut Self {
        self.register_with(handler, |p| p)
    }

    /// Registers a handler, customising its pipeline (extra layers, config overrides).
    pub fn register_with<H, F>(&mut self, handler: H, customize: F) -> &mut Self
    where
        H: Handler,
        F: FnOnce(PipelineBuilder) -> PipelineBuilder,
    {
        let builder = PipelineBuilder::new(Arc::new(handler));
        self.pipelines.push(customize(builder));
        self
    }

    /// The inbox layer for every handler declared with `#[handler(inbox)]`
    /// (or [`HandlerConfig::inbox`](crate::HandlerConfig)), usually
    /// `inbox.layer()` from `eventbus_core::inbox::Inbox`. Handlers given
    /// their own layer with [`PipelineBuilder::inbox`] keep it.
    pub fn inbox<L>(&mut self, layer: L) -> &mut Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service: Service<Context, Response = (), Error = HandleError> + Clone + Send + 'static,
        <L::Service as Service<Context>>::Future: Send + 'static,
    {
        self.inbox = Some(Arc::new(move |s| BoxCloneService::new(layer.layer(s))));
        self
    }

    /// Sets the capacity of each worker's queue (default 64).
    pub fn worker_queue(&mut self, capacity: usize) -> &mut Self {
        self.worker_queue = capacity.max(1);
        self
    }

    /// A publisher on this bus's transport.
    pub fn publisher(&self) -> EventPublisher {
        EventPublisher {
            transport: self.transport.clone(),
        }
    }

    /// Subscribes every registered group and starts its workers. If a
    /// group cannot be subscribed, the groups already started are stopped
    /// again (their messages go back to the transport) and the error names
    /// the group and the cause.
    pub async fn start(self) -> Result<RunningBus, StartError> {
        crate::EventRegistry::global()
            .check()
            .map_err(StartError::DuplicateEventName)?;
        let mut groups = HashSet::new();
        for p in &self.pipelines {
            if !groups.insert(p.config().group.clone()) {
                return Err(StartError::DuplicateGroup(p.config().group.clone()));
            }
        }
        let mut pipelines = Vec::with_capacity(self.pipelines.len());
        for p in self.pipelines {
            if p.config().inbox && !p.has_inbox_layer() {
                match &self.inbox {
                    Some(layer) => pipelines.push(p.inbox_shared(layer.clone())),
                    None => return Err(StartError::InboxNotConfigured(p.config().group.clone())),
                }
            } else {
                pipelines.push(p);
            }
        }
        let token = CancellationToken::new();
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let running = RunningBus {
            publisher: EventPublisher {
                transport: self.transport.clone(),
            },
            token: token.clone(),
            stop: stop.clone(),
            tracker: tracker.clone(),
            shutdown_timeout: self.shutdown_timeout,
            transport: self.transport.clone(),
            groups: pipelines.iter().map(|p| p.config().group.clone()).collect(),
        };
        let groups: Vec<_> = pipelines
            .into_iter()
            .map(|builder| {
                let handler_events = builder_events(&builder);
                let (config, pipeline) = builder.build();
                let spec = SubscriptionSpec::new(config.group.clone(), handler_events)
                    .prefetch(config.prefetch)
                    .partitions(config.partitions);
                (config, pipeline, spec)
            })
            .collect();
        // Every group's queues exist before any handler runs: an event one
        // handler publishes to another group is not lost because that group
        // was not subscribed yet.
        for (config, _, spec) in &groups {
            if let Err(source) = self.transport.declare(spec).await {
                return Err(StartError::Subscribe {
                    group: config.group.clone(),
                    source,
                });
            }
        }
        for (config, pipeline, spec) in groups {
            let subscription = match self.transport.subscribe(spec).await {
                Ok(s) => s,
                Err(source) => {
                    tracker.close();
                    running.shutdown().await;
                    return Err(StartError::Subscribe {
                        group: config.group.clone(),
                        source,
                    });
                }
            };
            let workers = PartitionedWorkers::spawn(
                &config.group,
                config.concurrency,
                config.ordering,
                self.worker_queue,
                pipeline,
            );
            tracker.spawn(receive(
                config.group.clone(),
                subscription,
                workers,
                token.clone(),
                stop.clone(),
            ));
        }
        tracker.close();
        Ok(running)
    }
}

fn builder_events(builder: &PipelineBuilder) -> Vec<String> {
    builder.events().iter().map(|s| (*s).to_owned()).collect()
}

/// Pulls deliveries from the subscription into the workers until cancelled,
/// then drains the workers (or, once `stop` is cancelled, stops them at
/// once) before releasing the subscription.
async fn receive(
    group: String,
    mut subscription: Subscription,
    workers: PartitionedWorkers,
    token: CancellationToken,
    stop: CancellationToken,
) {
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    let mut batch = Vec::with_capacity(RECEIVE_BATCH);
    let mut scratch = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            next = subscription.next() => next,
        };
        let mut ended = false;
        match next {
            Some(Ok(delivery)) => batch.push(delivery),
            Some(Err(e)) => tracing::error!(group = %group, error = %e, "subscription error"),
            None => ended = true,
        }
        if !ended {
            // Take whatever else is ready without waiting (no more than the
            // worker queues can take now, so nothing waits here longer than
            // it would have waited in the transport), then hand them to the
            // workers together.
            let limit = workers.free_slots().min(RECEIVE_BATCH);
            match subscription.take_ready(limit.saturating_sub(batch.len()), &mut batch) {
                TakeReady::Pending => {}
                TakeReady::Error(e) => {
                    tracing::error!(group = %group, error = %e, "subscription error");
                }
                TakeReady::Ended => ended = true,
            }
        }
        if ended {
            tracing::warn!(group = %group, "subscription ended");
        }
        let handed_over = workers.dispatch_batch(&mut batch, &mut scratch).await;
        if handed_over.is_err() || ended {
            break;
        }
    }
    let workers_stop = workers.stop_token();
    tokio::select! {
        () = workers.shutdown() => {}
        () = async {
            stop.cancelled().await;
            workers_stop.cancel();
            std::future::pending::<()>().await
        } => {}
    }
    drop(subscription);
}

/// Most deliveries the receiver takes from its subscription (only those
/// already ready, never waiting for more) before handing them to the workers.
/// Bounded anyway by the subscription's prefetch (unsettled deliveries).
const RECEIVE_BATCH: usize = 256;

/// Publishes typed events through the bus's transport (confirmed).
#[derive(Clone)]
pub struct EventPublisher {
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher").finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// Wraps `event` in a new envelope and publishes it; returns the
    /// envelope once the transport confirmed it.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<Arc<Envelope>, BoxError> {
        // Feature `otel`: an `eventbus.publish` span whose context the envelope carries.
        #[cfg(feature = "otel")]
        let span = tracing::info_span!("eventbus.publish", event = E::NAME);
        #[cfg(feature = "otel")]
        let envelope = Arc::new(span.in_scope(|| Envelope::from_event(event))?);
        #[cfg(not(feature = "otel"))]
        let envelope = Arc::new(Envelope::from_event(event)?);
        let published = self.transport.publish_shared(envelope.clone());
        #[cfg(feature = "otel")]
        let published = tracing::Instrument::instrument(published, span);
        published.await?;
        Ok(envelope)
    }

    /// Publishes a prepared envelope.
    pub async fn publish_envelope(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.transport.publish(envelope).await
    }
}

/// A started bus. Publish through it; [`RunningBus::shutdown`] drains in-flight work.
pub struct RunningBus {
    publisher: EventPublisher,
    /// Stop taking deliveries.
    token: CancellationToken,
    /// Stop handling at once (the shutdown deadline passed).
    stop: CancellationToken,
    tracker: TaskTracker,
    shutdown_timeout: Duration,
    transport: Arc<dyn Transport>,
    /// The groups this bus consumes.
    groups: Vec<String>,
}

/// [`RunningBus::wait_idle`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitIdleError {
    /// Messages were still pending when the time ran out.
    #[error("{pending} message(s) still pending after {timeout:?}")]
    Timeout {
        /// How long it waited.
        timeout: Duration,
        /// Messages pending at the end.
        pending: u64,
    },
    /// The transport cannot count pending messages.
    #[error("the transport cannot tell how many messages are pending")]
    Unsupported,
    /// Asking the transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl std::fmt::Debug for RunningBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningBus").finish_non_exhaustive()
    }
}

impl RunningBus {
    /// Publishes `event`; returns its envelope once the transport confirmed it.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<Arc<Envelope>, BoxError> {
        self.publisher.publish(event).await
    }

    /// A clonable publisher.
    pub fn publisher(&self) -> EventPublisher {
        self.publisher.clone()
    }

    /// Waits until this bus's groups have nothing pending: everything
    /// published to them so far was handled (or dead-lettered), including
    /// what their handlers published to each other meanwhile. For short
    /// programs and scripts — publish, `wait_idle`, `shutdown` — that must
    /// not exit before their events were handled. (Tests are better served
    /// by [`crate::testing::TestBus`].) Wakes on the transport's
    /// settlements where it can ([`Subscriber::wait_settled`](crate::Subscriber::wait_settled):
    /// the memory transport); otherwise (AMQP) polls its counts
    /// ([`Subscriber::pending`](crate::Subscriber::pending)) every few
    /// milliseconds. Either way it wants zero twice, the second look after
    /// the tasks woken by the last settlement ran; at most `timeout`.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<(), WaitIdleError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut idle_seen = false;
        loop {
            let woken =
                tokio::time::timeout_at(deadline, self.transport.wait_settled(&self.groups))
                    .await
                    .unwrap_or(Ok(false))?;
            let mut pending = 0;
            for g in &self.groups {
                pending += self
                    .transport
                    .pending(g)
                    .await?
                    .ok_or(WaitIdleError::Unsupported)?;
            }
            if pending == 0 && idle_seen {
                return Ok(());
            }
            idle_seen = pending == 0;
            if tokio::time::Instant::now() >= deadline {
                return Err(WaitIdleError::Timeout { timeout, pending });
            }
            if woken {
                // Let the tasks woken by the last settlement run first.
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(if idle_seen { 20 } else { 5 })).await;
            }
        }
    }

    /// Stops taking deliveries, finishes and settles everything already
    /// handed to workers, then closes the subscriptions. Deliveries the
    /// transport had prefetched but not yet handed out, and messages parked
    /// for a later retry, are returned to it.
    ///
    /// Waits at most the shutdown timeout
    /// ([`EventBus::shutdown_timeout`], default 30 s) for handlers in
    /// progress; then abandons them and returns their messages too. Nothing
    /// is lost either way: what was not acked is redelivered.
    pub async fn shutdown(self) {
        self.token.cancel();
        if tokio::time::timeout(self.shutdown_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_ms = self.shutdown_timeout.as_millis() as u64,
                "shutdown deadline passed; abandoning handlers in progress"
            );
            self.stop.cancel();
            self.tracker.wait().await;
        }
    }
}
