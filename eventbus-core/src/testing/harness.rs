//! [`TestBus`]: run your own handlers in a test, deterministically.
//!
//! A bus on the in-memory transport that records what each handler group
//! received (every attempt and how it ended), what was published (by the
//! test and by handlers), and the dead letters. [`RunningTestBus::run_until_idle`]
//! returns once every published event was handled or dead-lettered —
//! nothing to sleep for. Run the test on tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`) and retries, backoffs and
//! timeouts take no real time.
//!
//! ```
//! use eventbus_core::testing::TestBus;
//! use eventbus_core::{BoxError, Context, Event, Handle, Handler};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Event, Serialize, Deserialize)]
//! #[event(key = "order_id")]
//! struct OrderPlaced { order_id: String, quantity: u32 }
//!
//! #[derive(Handler)]
//! #[handler(group = "inventory", events(OrderPlaced))]
//! struct ReserveStock;
//!
//! impl Handle<OrderPlaced> for ReserveStock {
//!     async fn handle(&self, e: OrderPlaced, _cx: &Context) -> Result<(), BoxError> {
//!         if e.quantity == 0 { return Err("nothing to reserve".into()) }
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let mut t = TestBus::new();
//! t.register(ReserveStock);
//! let t = t.start().await;
//! t.publish(&OrderPlaced { order_id: "o-1".into(), quantity: 2 }).await;
//! t.publish(&OrderPlaced { order_id: "o-2".into(), quantity: 0 }).await;
//! t.run_until_idle().await;
//! assert_eq!(t.handled::<OrderPlaced>("inventory").len(), 1);
//! assert_eq!(t.dead_letters("inventory").len(), 1); // after 5 attempts
//! t.shutdown().await;
//! # });
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tower_layer::Layer;
use tower_service::Service;

use crate::pipeline::{HandlerService, PipelineBuilder};
use crate::transport::{
    Publisher, Subscriber, Subscription, SubscriptionSpec, TransportError, TransportFuture,
};
use crate::{
    Context, Envelope, Event, EventBus, EventPublisher, HandleError, Handler, MemoryTransport,
    RunningBus,
};

/// One attempt a handler group made at a message.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The message.
    pub envelope: Arc<Envelope>,
    /// Attempt number (1 = first).
    pub attempt: u32,
    /// `Some(Ok)` handled, `Some(Err(text))` failed, `None` did not finish
    /// (panicked, timed out, or still running).
    pub result: Option<Result<(), String>>,
}

#[derive(Debug, Default)]
struct Records {
    /// Per group, every attempt in the order they started.
    attempts: HashMap<String, Vec<Attempt>>,
    /// Everything published on the bus, in order.
    published: Vec<Envelope>,
    /// Per group, the dead letters.
    dead_letters: HashMap<String, Vec<Envelope>>,
}

type Shared = Arc<Mutex<Records>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Records> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// A test bus being set up: register handlers, then [`TestBus::start`].
pub struct TestBus {
    transport: MemoryTransport,
    bus: EventBus,
    records: Shared,
    groups: Vec<String>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for TestBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBus")
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl Default for TestBus {
    fn default() -> Self {
        Self::new()
    }
}

impl TestBus {
    /// An empty test bus on a fresh in-memory transport.
    pub fn new() -> Self {
        let transport = MemoryTransport::new();
        let records = Shared::default();
        let bus = EventBus::new(RecordingTransport {
            inner: transport.clone(),
            records: records.clone(),
        });
        Self {
            transport,
            bus,
            records,
            groups: Vec::new(),
            idle_timeout: Duration::from_secs(60),
        }
    }

    /// Registers a handler with its own configuration.
    pub fn register<H: Handler>(&mut self, handler: H) -> &mut Self {
        self.register_with(handler, |p| p)
    }

    /// Registers a handler, customising its pipeline as
    /// [`EventBus::register_with`] does (config overrides, inbox, layers).
    pub fn register_with<H, F>(&mut self, handler: H, customize: F) -> &mut Self
    where
        H: Handler,
        F: FnOnce(PipelineBuilder) -> PipelineBuilder,
    {
        let group = handler.config().group;
        self.groups.push(group.clone());
        let records = self.records.clone();
        self.bus.register_with(handler, move |p| {
            customize(p).layer(RecordLayer { group, records })
        });
        self
    }

    /// The bus itself, e.g. for [`EventBus::inbox`].
    pub fn bus_mut(&mut self) -> &mut EventBus {
        &mut self.bus
    }

    /// How long [`RunningTestBus::run_until_idle`] may take on the test's
    /// clock before it fails the test (default 60 s; on the paused clock
    /// that is no real time).
    pub fn idle_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.idle_timeout = timeout;
        self
    }

    /// A publisher to give to handlers that publish (their publications
    /// are recorded too).
    pub fn publisher(&self) -> EventPublisher {
        self.bus.publisher()
    }

    /// Starts the bus, plus a collector of each group's dead letters.
    ///
    /// # Panics
    /// If the bus cannot start (e.g. two handlers share a group).
    pub async fn start(self) -> RunningTestBus {
        let running = self
            .bus
            .start()
            .await
            .unwrap_or_else(|e| panic!("test bus did not start: {e}"));
        let mut collectors = Vec::new();
        for group in &self.groups {
            let sub = self
                .transport
                .subscribe_dead_letters(group, 256)
                .await
                .expect("memory transport subscribes");
            collectors.push(tokio::spawn(collect_dead_letters(
                group.clone(),
                sub,
                self.records.clone(),
            )));
        }
        RunningTestBus {
            transport: self.transport,
            running,
            records: self.records,
            collectors,
            idle_timeout: self.idle_timeout,
        }
    }
}

async fn collect_dead_letters(group: String, mut sub: Subscription, records: Shared) {
    while let Some(Ok(d)) = sub.next().await {
        lock(&records)
            .dead_letters
            .entry(group.clone())
            .or_default()
            .push((*d.envelope).clone());
        let _ = d.ack().await;
    }
}

/// A started [`TestBus`].
pub struct RunningTestBus {
    transport: MemoryTransport,
    running: RunningBus,
    records: Shared,
    collectors: Vec<tokio::task::JoinHandle<()>>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for RunningTestBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningTestBus").finish_non_exhaustive()
    }
}

impl RunningTestBus {
    /// Publishes `event` (as a service would); returns its envelope.
    ///
    /// # Panics
    /// If the event cannot be encoded.
    pub async fn publish<E: Event>(&self, event: &E) -> Arc<Envelope> {
        self.running
            .publish(event)
            .await
            .unwrap_or_else(|e| panic!("publish {}: {e}", E::NAME))
    }

    /// Publishes a prepared envelope (e.g. a malformed one).
    pub async fn publish_envelope(&self, envelope: &Envelope) {
        self.running
            .publisher()
            .publish_envelope(envelope)
            .await
            .unwrap_or_else(|e| panic!("publish {}: {e}", envelope.name));
    }

    /// A publisher on this bus (for handlers that publish).
    pub fn publisher(&self) -> EventPublisher {
        self.running.publisher()
    }

    /// Waits until every message published so far — and everything the
    /// handlers published meanwhile — was handled or dead-lettered,
    /// retries included. On the paused clock, backoffs pass at once.
    ///
    /// # Panics
    /// If that takes longer than the idle timeout on the test's clock.
    pub async fn run_until_idle(&self) {
        let idle = async {
            loop {
                // Woken by every publish and settlement; a retry's backoff
                // or a handler's own timer passes meanwhile (on the paused
                // clock at once, since then every task waits).
                self.transport
                    .wait_until(|| self.transport.pending() == 0)
                    .await;
                // Let tasks woken by the last settlement run, then look again.
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
                if self.transport.pending() == 0 {
                    return;
                }
            }
        };
        if tokio::time::timeout(self.idle_timeout, idle).await.is_err() {
            panic!(
                "test bus not idle after {:?}: {} message(s) unsettled",
                self.idle_timeout,
                self.transport.pending()
            );
        }
    }

    /// Every attempt `group` made, in the order they started.
    pub fn attempts(&self, group: &str) -> Vec<Attempt> {
        lock(&self.records)
            .attempts
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// The events of type `E` that `group` handled successfully, in order.
    pub fn handled<E: Event>(&self, group: &str) -> Vec<E> {
        self.attempts(group)
            .into_iter()
            .filter(|a| matches!(a.result, Some(Ok(()))) && a.envelope.name == E::NAME)
            .filter_map(|a| a.envelope.decode().ok())
            .collect()
    }

    /// Every envelope published on the bus (by the test and by handlers).
    pub fn published_envelopes(&self) -> Vec<Envelope> {
        lock(&self.records).published.clone()
    }

    /// The events of type `E` published on the bus, in order.
    pub fn published<E: Event>(&self) -> Vec<E> {
        lock(&self.records)
            .published
            .iter()
            .filter(|e| e.name == E::NAME)
            .filter_map(|e| e.decode().ok())
            .collect()
    }

    /// The dead letters of `group` (with their `x-eventbus-*` headers).
    pub fn dead_letters(&self, group: &str) -> Vec<Envelope> {
        lock(&self.records)
            .dead_letters
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// The underlying transport (queue statistics).
    pub fn transport(&self) -> &MemoryTransport {
        &self.transport
    }

    /// Stops the bus.
    pub async fn shutdown(self) {
        self.running.shutdown().await;
        for c in self.collectors {
            c.abort();
        }
    }
}

/// The memory transport, recording every publication.
#[derive(Clone)]
struct RecordingTransport {
    inner: MemoryTransport,
    records: Shared,
}

#[async_trait]
impl Publisher for RecordingTransport {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.inner.publish(envelope).await?;
        lock(&self.records).published.push(envelope.clone());
        Ok(())
    }

    fn publish_shared(&self, envelope: Arc<Envelope>) -> TransportFuture<'_> {
        TransportFuture::new(async move {
            self.inner.publish_shared(envelope.clone()).await?;
            lock(&self.records).published.push((*envelope).clone());
            Ok(())
        })
    }
}

#[async_trait]
impl Subscriber for RecordingTransport {
    async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, TransportError> {
        self.inner.subscribe(spec).await
    }

    async fn subscribe_dead_letters(
        &self,
        group: &str,
        prefetch: u16,
    ) -> Result<Subscription, TransportError> {
        self.inner.subscribe_dead_letters(group, prefetch).await
    }
}

/// Records each attempt of one group (innermost layer, around the handler).
#[derive(Clone)]
struct RecordLayer {
    group: String,
    records: Shared,
}

impl Layer<HandlerService> for RecordLayer {
    type Service = Record;
    fn layer(&self, inner: HandlerService) -> Record {
        Record {
            inner,
            group: self.group.clone(),
            records: self.records.clone(),
        }
    }
}

#[derive(Clone)]
struct Record {
    inner: HandlerService,
    group: String,
    records: Shared,
}

impl Service<Context> for Record {
    type Response = ();
    type Error = HandleError;
    type Future = BoxFuture<'static, Result<(), HandleError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: Context) -> Self::Future {
        let index = {
            let mut r = lock(&self.records);
            let list = r.attempts.entry(self.group.clone()).or_default();
            list.push(Attempt {
                envelope: cx.envelope_arc().clone(),
                attempt: cx.attempt(),
                result: None,
            });
            list.len() - 1
        };
        let (group, records) = (self.group.clone(), self.records.clone());
        let fut = self.inner.call(cx);
        Box::pin(async move {
            let result = fut.await;
            if let Some(a) = lock(&records)
                .attempts
                .get_mut(&group)
                .and_then(|l| l.get_mut(index))
            {
                a.result = Some(result.as_ref().map(|_| ()).map_err(ToString::to_string));
            }
            result
        })
    }
}

impl std::fmt::Debug for RecordingTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingTransport").finish_non_exhaustive()
    }
}
