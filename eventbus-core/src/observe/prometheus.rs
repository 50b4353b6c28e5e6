//! `/metrics` in the Prometheus text format (feature `prometheus`).
//!
//! ```ignore
//! let metrics = eventbus::observe::prometheus::install()?; // before bus.start()
//! let app = axum::Router::new().merge(eventbus::observe::prometheus::router(metrics));
//! ```

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::Matcher;
pub use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds (seconds) of the duration histograms: 100 µs … 60 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// A builder with histogram buckets for the framework's `*_seconds`
/// histograms (Prometheus histograms rather than summaries).
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .expect("non-empty bucket list")
}

/// Installs a Prometheus recorder as the global `metrics` recorder (with
/// [`builder`]'s buckets) and describes the framework's metrics. Call it
/// once, before starting the bus and the relay. Fails if a recorder is
/// already installed.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = builder().install_recorder()?;
    super::describe();
    Ok(handle)
}

/// A router serving `GET /metrics` from `handle` (merge or nest it into
/// the service's own router).
pub fn router<S: Clone + Send + Sync + 'static>(handle: PrometheusHandle) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    handle.render(),
                )
            }
        }),
    )
}
