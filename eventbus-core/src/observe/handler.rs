//! Per-group handler metrics: label handles resolved once, when the
//! group's pipeline is built.

use std::time::Duration;

use metrics::{Counter, Histogram};

use super::names;
use crate::middleware::Outcome;

/// The counters of one event in a group, by outcome.
#[derive(Debug)]
struct EventCounters {
    name: Box<str>,
    handled: Counter,
    retried: Counter,
    dead_lettered: Counter,
    failed: Counter,
}

impl EventCounters {
    fn new(group: &str, event: &str) -> Self {
        let outcome = |o: &'static str| metrics::counter!(names::HANDLER_HANDLED, "group" => group.to_owned(), "event" => event.to_owned(), "outcome" => o);
        Self {
            name: event.into(),
            handled: outcome("handled"),
            retried: outcome("retried"),
            dead_lettered: outcome("dead_lettered"),
            failed: metrics::counter!(names::HANDLER_FAILED, "group" => group.to_owned(), "event" => event.to_owned()),
        }
    }
}

/// The metric handles of one handler group (see [`crate::observe`]).
///
/// Built when the pipeline is built: with no recorder installed the handles
/// are no-ops, and recording an attempt costs a clock read and a few
/// branches.
#[derive(Debug)]
pub struct HandlerMetrics {
    /// The group's events; the last entry (`event="other"`) takes names the
    /// group does not subscribe to (they are dead-lettered), so a foreign
    /// publisher cannot create label sets without bound.
    events: Vec<EventCounters>,
    duration: Histogram,
}

impl HandlerMetrics {
    /// Handles for `group` and its `events`.
    pub fn new<'a>(group: &str, events: impl IntoIterator<Item = &'a str>) -> Self {
        let mut counters: Vec<EventCounters> = events
            .into_iter()
            .map(|e| EventCounters::new(group, e))
            .collect();
        counters.push(EventCounters::new(group, "other"));
        Self {
            events: counters,
            duration: metrics::histogram!(names::HANDLER_DURATION, "group" => group.to_owned()),
        }
    }

    /// Records one attempt at `event` that took `elapsed` and ended in `outcome`.
    pub fn record(&self, event: &str, elapsed: Duration, outcome: &Outcome) {
        let last = self.events.len() - 1;
        let c = self.events[..last]
            .iter()
            .find(|c| *c.name == *event)
            .unwrap_or(&self.events[last]);
        match outcome {
            Outcome::Handled => c.handled.increment(1),
            Outcome::Retry { .. } => {
                c.failed.increment(1);
                c.retried.increment(1);
            }
            Outcome::DeadLetter(_) => {
                c.failed.increment(1);
                c.dead_lettered.increment(1);
            }
        }
        self.duration.record(elapsed.as_secs_f64());
    }
}
