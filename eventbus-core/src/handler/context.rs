//! What a handler knows about the delivery it is handling.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

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
    envelope: Arc<Envelope>,
    group: Arc<str>,
    redelivered: bool,
    /// Attempts actually started, shared by all attempts of one delivery
    /// (the dead-letter layer reports it).
    attempts_made: AtomicU32,
}

impl Context {
    /// A context for the first attempt at `envelope` in `group`.
    pub fn new(envelope: Arc<Envelope>, group: Arc<str>, redelivered: bool) -> Self {
        Self {
            delivery: Arc::new(DeliveryInfo {
                envelope,
                group,
                redelivered,
                attempts_made: AtomicU32::new(0),
            }),
            attempt: 1,
        }
    }
    /// The message being handled.
    pub fn envelope(&self) -> &Envelope {
        &self.delivery.envelope
    }
    /// Shared handle to the envelope.
    pub fn envelope_arc(&self) -> &Arc<Envelope> {
        &self.delivery.envelope
    }
    /// The message id.
    pub fn message_id(&self) -> uuid::Uuid {
        self.delivery.envelope.id
    }
    /// The partition key.
    pub fn key(&self) -> Option<&str> {
        self.delivery.envelope.key.as_deref()
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
}
