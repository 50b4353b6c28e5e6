//! What a handler knows about the delivery it is handling.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::middleware::TraceParent;
use crate::Envelope;

/// The delivery being handled: envelope metadata, attempt number, group.
///
/// Cheap to clone (one reference count): the delivery's data is shared by
/// every attempt and layer.
#[derive(Debug, Clone)]
pub struct Context {
    delivery: Arc<DeliveryInfo>,
    attempt: u32,
}

#[derive(Debug)]
struct DeliveryInfo {
    /// Always set while a [`Context`] exists; `None` only in a worker's idle
    /// [`ContextSlot`], so that a handled envelope is not kept alive.
    envelope: Option<Arc<Envelope>>,
    group: Arc<str>,
    redelivered: bool,
    /// Attempts actually started, shared by all attempts of one delivery
    /// (the dead-letter layer reports it).
    attempts_made: AtomicU32,
    /// The trace context of the handling span (a child of the envelope's
    /// `traceparent`, or a new root), resolved on first use.
    trace: OnceLock<TraceParent>,
}

impl DeliveryInfo {
    fn new(envelope: Arc<Envelope>, group: Arc<str>, redelivered: bool) -> Self {
        Self {
            envelope: Some(envelope),
            group,
            redelivered,
            attempts_made: AtomicU32::new(0),
            trace: OnceLock::new(),
        }
    }

    fn envelope(&self) -> &Arc<Envelope> {
        self.envelope
            .as_ref()
            .expect("a context always has its envelope")
    }
}

impl Context {
    /// A context for the first attempt at `envelope` in `group`.
    pub fn new(envelope: Arc<Envelope>, group: Arc<str>, redelivered: bool) -> Self {
        Self {
            delivery: Arc::new(DeliveryInfo::new(envelope, group, redelivered)),
            attempt: 1,
        }
    }
    /// The message being handled.
    pub fn envelope(&self) -> &Envelope {
        self.delivery.envelope()
    }
    /// Shared handle to the envelope.
    pub fn envelope_arc(&self) -> &Arc<Envelope> {
        self.delivery.envelope()
    }
    /// The message id.
    pub fn message_id(&self) -> uuid::Uuid {
        self.envelope().id
    }
    /// The partition key.
    pub fn key(&self) -> Option<&str> {
        self.envelope().key.as_deref()
    }
    /// The handler group.
    pub fn group(&self) -> &str {
        &self.delivery.group
    }
    /// The attempt number within this delivery (1 = first try).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// True if the transport delivered this message before (a duplicate is possible).
    pub fn redelivered(&self) -> bool {
        self.delivery.redelivered
    }
    /// How many attempts have been started for this delivery so far.
    pub fn attempts_made(&self) -> u32 {
        self.delivery.attempts_made.load(Ordering::Relaxed)
    }
    /// Records that an attempt starts (called by the pipeline, once per attempt).
    pub fn record_attempt(&self) {
        self.delivery.attempts_made.fetch_add(1, Ordering::Relaxed);
    }
    /// This context for the next attempt.
    pub fn next_attempt(&self) -> Self {
        Self {
            attempt: self.attempt + 1,
            ..self.clone()
        }
    }

    /// The delivery's trace context, shared by all its attempts (see
    /// [`TraceParent::current`]); `resolve` computes it on first use.
    pub(crate) fn trace(&self, resolve: impl FnOnce(&Envelope) -> TraceParent) -> TraceParent {
        *self
            .delivery
            .trace
            .get_or_init(|| resolve(self.delivery.envelope()))
    }

    /// Sets the delivery's trace context (unless one was resolved already).
    pub(crate) fn set_trace(&self, trace: TraceParent) -> TraceParent {
        *self.delivery.trace.get_or_init(|| trace)
    }
}

/// A worker's reusable delivery context.
///
/// A worker handles one delivery at a time, and once the pipeline is done
/// with a delivery nothing holds its context any more: the next delivery
/// reuses the allocation instead of making a new one. If something still
/// holds the old context (a task the handler spawned with a clone), it
/// keeps it and the next delivery gets a fresh one.
#[derive(Debug)]
pub(crate) struct ContextSlot {
    group: Arc<str>,
    idle: Option<Arc<DeliveryInfo>>,
}

impl ContextSlot {
    pub(crate) fn new(group: Arc<str>) -> Self {
        Self { group, idle: None }
    }

    /// The context for the first attempt at `envelope`.
    pub(crate) fn context(&mut self, envelope: Arc<Envelope>, redelivered: bool) -> Context {
        let delivery = match self.idle.take() {
            Some(mut info) => match Arc::get_mut(&mut info) {
                Some(i) => {
                    i.envelope = Some(envelope);
                    i.redelivered = redelivered;
                    *i.attempts_made.get_mut() = 0;
                    i.trace = OnceLock::new();
                    info
                }
                None => Arc::new(DeliveryInfo::new(envelope, self.group.clone(), redelivered)),
            },
            None => Arc::new(DeliveryInfo::new(envelope, self.group.clone(), redelivered)),
        };
        Context {
            delivery,
            attempt: 1,
        }
    }

    /// Takes `cx` back after its delivery was handled and settled: its
    /// envelope is released now, its allocation kept for the next one if
    /// nothing else holds it.
    pub(crate) fn release(&mut self, cx: Context) {
        let mut info = cx.delivery;
        if let Some(i) = Arc::get_mut(&mut info) {
            i.envelope = None;
            self.idle = Some(info);
        }
    }
}
