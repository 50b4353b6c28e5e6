//! Per-handler settings, usually from `#[handler(...)]` attributes.

use std::time::Duration;

/// How deliveries of one group are spread over its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Same key → same worker → strict order; different keys in parallel.
    #[default]
    ByKey,
    /// Any worker takes any event; no order is kept.
    Unordered,
}

/// Delay between attempts: exponential with full jitter, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Upper bound for any delay.
    pub max: Duration,
    /// Growth factor per attempt.
    pub multiplier: u32,
    /// Randomise each delay in `[delay/2, delay]` to spread retry storms.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2,
            jitter: true,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1)
            .saturating_pow(attempt.saturating_sub(1).min(31));
        let base = self.initial.saturating_mul(exp).min(self.max);
        if self.jitter && !base.is_zero() {
            let half = base / 2;
            half + half.mul_f64(fastrand::f64())
        } else {
            base
        }
    }
}

/// How often a failing event is tried before it is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff::default(),
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure dead-letters.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// Everything the bus needs to run one handler group.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerConfig {
    /// The group (one queue per group; instances of a group compete,
    /// different groups each get every event).
    pub group: String,
    /// Number of workers (partitions) in this process.
    pub concurrency: usize,
    /// Key-ordered or unordered.
    pub ordering: Ordering,
    /// Retries before dead-lettering.
    pub retry: RetryPolicy,
    /// Time limit for one attempt; `None` = unlimited.
    pub timeout: Option<Duration>,
    /// Deliveries the transport may hand out before acks (AMQP prefetch).
    pub prefetch: u16,
    /// Run each attempt inside an inbox transaction: duplicates are skipped,
    /// the handler's writes and the inbox row commit together (see
    /// `eventbus_core::inbox`; the pipeline needs an inbox layer,
    /// [`PipelineBuilder::inbox`](crate::pipeline::PipelineBuilder::inbox)).
    pub inbox: bool,
    /// Partitions of the group shared by its instances (0 or 1: not
    /// partitioned, one queue with competing consumers). With `P > 1` the
    /// transport splits the group into `P` partition queues by a hash of
    /// the event key; each partition is consumed by one live instance at a
    /// time, so one key's events are handled in order across instances, and
    /// a dead instance's partitions are taken over by the others
    /// (`#[handler(partitions = 8)]`, at most 1024).
    pub partitions: u16,
}

impl HandlerConfig {
    /// Defaults for `group`: 1 worker, key-ordered, 5 attempts, 30 s timeout.
    pub fn new(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            concurrency: 1,
            ordering: Ordering::ByKey,
            retry: RetryPolicy::default(),
            timeout: Some(Duration::from_secs(30)),
            prefetch: 256,
            inbox: false,
            partitions: 0,
        }
    }
}
