//! `GET /metrics`: Prometheus text rendered by `metrics-exporter-prometheus`.
//!
//! Gauges and counters are computed from a snapshot at scrape time and fed into a fresh
//! recorder (so deleted queues disappear from the output); the store-sync latency
//! histogram is recorded on the hot path into a long-lived recorder ([`SyncLatency`]).
//! Names follow RabbitMQ's prometheus plugin where a counterpart exists.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::snapshot::{self, Vhosts};
use super::AppState;

/// Buckets of the store-sync latency histogram (seconds).
const SYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The long-lived recorder behind `eventbus_store_sync_seconds`.
#[derive(Debug)]
pub struct SyncLatency {
    recorder: PrometheusRecorder,
}

impl SyncLatency {
    /// A recorder and the histogram handle the connections record into.
    pub fn new() -> (SyncLatency, metrics::Histogram) {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&SYNC_BUCKETS)
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let h = metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!(
                "eventbus_store_sync_seconds",
                metrics::Unit::Seconds,
                "Time from a batch's store-sync request until its messages are durable (confirm latency due to fsync)"
            );
            metrics::histogram!("eventbus_store_sync_seconds")
        });
        (SyncLatency { recorder }, h)
    }

    fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

/// Render every metric.
pub async fn scrape(State(state): State<AppState>) -> Response {
    let st = state.clone();
    let text = match super::offload(&state, move || render(&st)).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn render(state: &AppState) -> String {
    let core = &state.core;
    let queues = snapshot::queues(core, &Vhosts::All, None);
    let vhosts = snapshot::vhosts(core, &Vhosts::All);
    let conns = snapshot::connections(core);
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        describe();
        for q in &queues {
            let l = [("vhost", q.vhost.clone()), ("queue", q.name.clone())];
            gauge!("rabbitmq_queue_messages_ready", &l).set(q.ready as f64);
            gauge!("rabbitmq_queue_messages_unacked", &l).set(q.unacked as f64);
            gauge!("rabbitmq_queue_messages", &l).set((q.ready + q.unacked) as f64);
            gauge!("rabbitmq_queue_messages_ready_bytes", &l).set(q.ready_bytes as f64);
            gauge!("rabbitmq_queue_consumers", &l).set(q.consumers.len() as f64);
            counter!("rabbitmq_queue_messages_published_total", &l).absolute(q.counts.publish);
            counter!("rabbitmq_queue_messages_delivered_total", &l)
                .absolute(q.counts.deliver_get());
            counter!("rabbitmq_queue_messages_acked_total", &l).absolute(q.counts.ack);
            counter!("rabbitmq_queue_messages_redelivered_total", &l).absolute(q.counts.redeliver);
        }
        let mut t = snapshot::VhostSnap::default();
        for v in &vhosts {
            t.publish += v.publish;
            t.confirm += v.confirm;
            t.return_unroutable += v.return_unroutable;
            t.drop_unroutable += v.drop_unroutable;
            t.counts.add(&v.counts);
            t.consumers += v.consumers;
            t.queues += v.queues;
        }
        counter!("rabbitmq_global_messages_received_total").absolute(t.publish);
        counter!("rabbitmq_global_messages_confirmed_total").absolute(t.confirm);
        counter!("rabbitmq_global_messages_routed_total").absolute(t.counts.publish);
        counter!("rabbitmq_global_messages_delivered_total").absolute(t.counts.deliver_get());
        counter!("rabbitmq_global_messages_acknowledged_total").absolute(t.counts.ack);
        counter!("rabbitmq_global_messages_redelivered_total").absolute(t.counts.redeliver);
        counter!("rabbitmq_global_messages_unroutable_dropped_total").absolute(t.drop_unroutable);
        counter!("rabbitmq_global_messages_unroutable_returned_total")
            .absolute(t.return_unroutable);
        gauge!("rabbitmq_queues").set(t.queues as f64);
        gauge!("rabbitmq_consumers").set(t.consumers as f64);
        gauge!("rabbitmq_connections").set(conns.len() as f64);
        gauge!("rabbitmq_channels")
            .set(conns.iter().map(|c| c.info.channels().len()).sum::<usize>() as f64);
        gauge!("eventbus_blocked_connections").set(
            conns
                .iter()
                .filter(|c| c.info.blocked.load(Relaxed))
                .count() as f64,
        );
        let wm = state.config.memory_high_watermark;
        let used = core.memory.used();
        gauge!("eventbus_message_memory_bytes").set(used as f64);
        gauge!("rabbitmq_resident_memory_limit_bytes").set(wm as f64);
        gauge!("rabbitmq_alarms_memory_used_watermark").set(if wm != 0 && used > wm {
            1.0
        } else {
            0.0
        });
        gauge!("rabbitmq_alarms_free_disk_space_watermark").set(if core.disk_alarm() {
            1.0
        } else {
            0.0
        });
        gauge!("rabbitmq_disk_space_available_limit_bytes").set(core.disk_free_limit() as f64);
        if let Ok(free) = crate::disk_free(&state.config.data_dir) {
            gauge!("rabbitmq_disk_space_available_bytes").set(free as f64);
        }
        let s = core.store.stats();
        gauge!("eventbus_store_bytes").set(s.bytes as f64);
        gauge!("eventbus_store_segments").set(s.segments as f64);
        gauge!("eventbus_store_messages").set(s.messages as f64);
        counter!("eventbus_store_sync_rounds_total").absolute(s.sync_rounds);
    });
    let mut out = recorder.handle().render();
    if let Some(h) = core.sync_latency_recorder() {
        out.push_str(&h.render());
    }
    out
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "rabbitmq_queue_messages_ready",
        "Messages ready to be delivered"
    );
    describe_gauge!(
        "rabbitmq_queue_messages_unacked",
        "Messages delivered, not yet acknowledged"
    );
    describe_gauge!(
        "rabbitmq_queue_messages",
        "Ready plus unacknowledged messages"
    );
    describe_gauge!(
        "rabbitmq_queue_messages_ready_bytes",
        "Bytes of ready message bodies"
    );
    describe_gauge!("rabbitmq_queue_consumers", "Consumers on the queue");
    describe_counter!(
        "rabbitmq_queue_messages_published_total",
        "Messages that entered the queue"
    );
    describe_counter!(
        "rabbitmq_queue_messages_delivered_total",
        "Deliveries and gets from the queue"
    );
    describe_counter!(
        "rabbitmq_queue_messages_acked_total",
        "Acknowledged deliveries"
    );
    describe_counter!("rabbitmq_queue_messages_redelivered_total", "Redeliveries");
    describe_counter!(
        "rabbitmq_global_messages_received_total",
        "Messages published by clients"
    );
    describe_counter!(
        "rabbitmq_global_messages_confirmed_total",
        "Publisher confirms sent"
    );
    describe_counter!(
        "rabbitmq_global_messages_routed_total",
        "Messages enqueued into queues"
    );
    describe_counter!(
        "rabbitmq_global_messages_delivered_total",
        "Deliveries and gets"
    );
    describe_counter!(
        "rabbitmq_global_messages_acknowledged_total",
        "Acknowledged deliveries"
    );
    describe_counter!("rabbitmq_global_messages_redelivered_total", "Redeliveries");
    describe_counter!(
        "rabbitmq_global_messages_unroutable_dropped_total",
        "Unroutable messages dropped"
    );
    describe_counter!(
        "rabbitmq_global_messages_unroutable_returned_total",
        "Unroutable mandatory messages returned"
    );
    describe_gauge!("rabbitmq_connections", "Open AMQP connections");
    describe_gauge!("rabbitmq_channels", "Open AMQP channels");
    describe_gauge!("rabbitmq_queues", "Queues");
    describe_gauge!("rabbitmq_consumers", "Consumers");
    describe_gauge!(
        "eventbus_blocked_connections",
        "Publishing connections blocked by a resource alarm"
    );
    describe_gauge!(
        "eventbus_message_memory_bytes",
        "Bytes of message bodies held in memory"
    );
    describe_gauge!(
        "rabbitmq_resident_memory_limit_bytes",
        "Memory high watermark (bytes of message bodies)"
    );
    describe_gauge!(
        "rabbitmq_alarms_memory_used_watermark",
        "1 while the memory alarm is raised"
    );
    describe_gauge!(
        "rabbitmq_alarms_free_disk_space_watermark",
        "1 while the disk alarm is raised"
    );
    describe_gauge!(
        "rabbitmq_disk_space_available_bytes",
        "Free bytes on the data directory's filesystem"
    );
    describe_gauge!(
        "rabbitmq_disk_space_available_limit_bytes",
        "disk_free_limit"
    );
    describe_gauge!(
        "eventbus_store_bytes",
        "Bytes of message store segments on disk"
    );
    describe_gauge!("eventbus_store_segments", "Message store segment files");
    describe_gauge!("eventbus_store_messages", "Live messages in the store");
    describe_counter!(
        "eventbus_store_sync_rounds_total",
        "Group-commit fsync rounds"
    );
}
