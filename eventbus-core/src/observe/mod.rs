//! Observability: the framework's metrics, the gauge sampler, the
//! Prometheus endpoint (feature `prometheus`) and OpenTelemetry glue
//! (feature `otel`).
//!
//! Metrics are recorded through the [`metrics`] facade: nothing is kept
//! until the application installs a recorder (for Prometheus:
//! [`prometheus::install`]), so an uninstrumented service pays next to
//! nothing (with no recorder installed when the bus starts, the handler
//! pipeline does not even read the clock). Label handles are resolved once
//! per handler group when the bus starts, not per event — **install the recorder before starting the bus**
//! and the relay.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `eventbus_handler_handled_total` | counter | `group`, `event`, `outcome` (`handled`, `retried`, `dead_lettered`) |
//! | `eventbus_handler_failed_total` | counter | `group`, `event` (failed attempts: retried or dead-lettered) |
//! | `eventbus_handler_duration_seconds` | histogram | `group` (one attempt) |
//! | `eventbus_relay_published_total` | counter | `table` |
//! | `eventbus_relay_failed_total` | counter | `table` (rows refused: retried or parked) |
//! | `eventbus_relay_lag_seconds` | histogram | `table` (event created → publish confirmed) |
//! | `eventbus_outbox_backlog` | gauge | `table` (unsent rows, parked included) |
//! | `eventbus_outbox_parked` | gauge | `table` |
//! | `eventbus_outbox_oldest_age_seconds` | gauge | `table` (0 when empty) |
//! | `eventbus_inbox_rows` | gauge | `table` |
//!
//! The gauges are sampled by a [`GaugeSampler`] task, not per publish.

mod handler;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod sampler;

#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "prometheus")]
pub mod prometheus;

pub use handler::HandlerMetrics;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use sampler::{GaugeSampler, SamplerHandle};

/// Metric names (see the [module docs](self)).
pub mod names {
    /// Counter: deliveries by outcome.
    pub const HANDLER_HANDLED: &str = "eventbus_handler_handled_total";
    /// Counter: failed attempts.
    pub const HANDLER_FAILED: &str = "eventbus_handler_failed_total";
    /// Histogram: attempt duration.
    pub const HANDLER_DURATION: &str = "eventbus_handler_duration_seconds";
    /// Counter: rows the relay published.
    pub const RELAY_PUBLISHED: &str = "eventbus_relay_published_total";
    /// Counter: rows the transport refused.
    pub const RELAY_FAILED: &str = "eventbus_relay_failed_total";
    /// Histogram: event created → publish confirmed.
    pub const RELAY_LAG: &str = "eventbus_relay_lag_seconds";
    /// Gauge: unsent outbox rows.
    pub const OUTBOX_BACKLOG: &str = "eventbus_outbox_backlog";
    /// Gauge: parked outbox rows.
    pub const OUTBOX_PARKED: &str = "eventbus_outbox_parked";
    /// Gauge: age of the oldest unsent row.
    pub const OUTBOX_OLDEST_AGE: &str = "eventbus_outbox_oldest_age_seconds";
    /// Gauge: inbox rows.
    pub const INBOX_ROWS: &str = "eventbus_inbox_rows";
}

/// Whether a `metrics` recorder is installed where this is called (the
/// global one, or a local one in scope). A group's pipeline records
/// nothing — not even a clock read — when none was installed as the bus
/// started.
///
/// The facade's fallback, `metrics::NoopRecorder`, is the one zero-sized
/// recorder that matters; a recorder that keeps anything has a size. (A
/// zero-sized recorder of your own that forwards to statics counts as
/// none: give it a field.)
pub fn recorder_installed() -> bool {
    metrics::with_recorder(|r| std::mem::size_of_val(r) != 0)
}

/// Registers descriptions and units for every metric with the installed
/// recorder (optional: names and values work without).
pub fn describe() {
    use metrics::Unit;
    metrics::describe_counter!(
        names::HANDLER_HANDLED,
        "Deliveries per handler group, event and outcome (handled, retried, dead_lettered)"
    );
    metrics::describe_counter!(
        names::HANDLER_FAILED,
        "Failed handler attempts per group and event"
    );
    metrics::describe_histogram!(
        names::HANDLER_DURATION,
        Unit::Seconds,
        "Duration of one handler attempt"
    );
    metrics::describe_counter!(
        names::RELAY_PUBLISHED,
        "Outbox rows published (confirmed) by the relay"
    );
    metrics::describe_counter!(names::RELAY_FAILED, "Outbox rows the transport refused");
    metrics::describe_histogram!(
        names::RELAY_LAG,
        Unit::Seconds,
        "Time from an event's creation to its confirmed publish"
    );
    metrics::describe_gauge!(names::OUTBOX_BACKLOG, "Unsent outbox rows, parked included");
    metrics::describe_gauge!(names::OUTBOX_PARKED, "Parked outbox rows");
    metrics::describe_gauge!(
        names::OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest unsent outbox row"
    );
    metrics::describe_gauge!(names::INBOX_ROWS, "Rows in the inbox table");
}

#[cfg(test)]
mod tests {
    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    /// A recorder that keeps something (a count of registrations).
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn a_recorder_is_detected_only_when_installed() {
        assert!(!super::recorder_installed(), "the no-op fallback");
        let recorder = Counting(Default::default());
        assert!(metrics::with_local_recorder(
            &recorder,
            super::recorder_installed
        ));
        let m =
            metrics::with_local_recorder(&recorder, || super::HandlerMetrics::new("g", ["a", "b"]));
        // Three outcomes + failed, for each event and `other`.
        assert_eq!(recorder.0.load(std::sync::atomic::Ordering::Relaxed), 12);
        drop(m);
        assert!(!super::recorder_installed(), "local recorder out of scope");
    }
}
