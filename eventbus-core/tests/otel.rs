//! OpenTelemetry traces through outbox → relay → transport → handler →
//! reply (feature `otel`), recorded by the SDK's in-memory exporter: every
//! span shares the request's trace id, and each hop is the previous one's
//! child. Runs over the memory transport and, headers crossing a real
//! broker, over RabbitMQ (feature `amqp`).
#![cfg(all(feature = "otel", feature = "sqlite"))]

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use eventbus_core::outbox::{Outbox, OutboxConfig, RelayConfig};
use eventbus_core::{
    BoxError, Context, Event, EventBus, EventPublisher, Handle, Handler, MemoryTransport, Transport,
};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.otel.order-placed", key = "order")]
struct OrderPlaced {
    order: String,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.otel.order-shipped", key = "order")]
struct OrderShipped {
    order: String,
}

#[derive(Handler)]
#[handler(group = "otel-shipping", events(OrderPlaced))]
struct Shipping {
    events: EventPublisher,
}

impl Handle<OrderPlaced> for Shipping {
    async fn handle(&self, e: OrderPlaced, _cx: &Context) -> Result<(), BoxError> {
        self.events
            .publish(&OrderShipped { order: e.order })
            .await?;
        Ok(())
    }
}

#[derive(Handler)]
#[handler(group = "otel-audit", events(OrderShipped))]
struct Audit;

impl Handle<OrderShipped> for Audit {
    async fn handle(&self, _e: OrderShipped, _cx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The exporter behind the global subscriber of this test binary.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("eventbus-test");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        exporter
    })
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The spans of one trace: (name, `group` attribute if it must match).
const EXPECTED: [(&str, Option<&str>); 6] = [
    ("POST /orders", None),
    ("eventbus.outbox.insert", None),
    ("eventbus.relay.publish", None),
    ("eventbus.handle", Some("otel-shipping")),
    ("eventbus.publish", None),
    ("eventbus.handle", Some("otel-audit")),
];

/// Waits (10 s deadline) until every span of [`EXPECTED`] in `trace` has
/// ended and been exported (they end in no fixed order: the relay's span
/// waits for the broker's confirm while the handlers may already be done),
/// and returns every span of the trace.
async fn spans_until_complete(trace: TraceId) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans: Vec<SpanData> = exporter()
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .collect();
        let complete = EXPECTED.iter().all(|(name, group)| {
            spans.iter().any(|s| {
                s.name == *name && (group.is_none() || attr(s, "group").as_deref() == *group)
            })
        });
        if complete {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace} incomplete: {:#?}",
            spans
                .iter()
                .map(|s| (&s.name, attr(s, "group")))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The one span named `name` (with `group`, if given).
fn one<'a>(spans: &'a [SpanData], name: &str, group: Option<&str>) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && (group.is_none() || attr(s, "group").as_deref() == group))
        .collect();
    assert_eq!(found.len(), 1, "spans named {name} {group:?}: {found:#?}");
    found[0]
}

/// Request → outbox insert → relay publish → handle → reply publish →
/// the reply's handle, over `transport`.
async fn one_trace_from_request_to_reply<T: Transport + Clone>(transport: T) {
    exporter();
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::from_str(&format!(
                "sqlite://{}",
                dir.path().join("o.db").display()
            ))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let outbox = Outbox::sqlite_with(
        pool.clone(),
        OutboxConfig::new().table("otel_outbox").unwrap(),
    );
    outbox.migrate().await.unwrap();

    let mut bus = EventBus::new(transport.clone());
    bus.register(Shipping {
        events: bus.publisher(),
    });
    bus.register(Audit);
    let bus = bus.start().await.unwrap();

    // The service's request span; the outbox row is written under it.
    let request = tracing::info_span!("POST /orders");
    let order = eventbus_core::event::new_message_id().to_string();
    let id = {
        let mut tx = pool.begin().await.unwrap();
        let id = tracing::Instrument::instrument(
            outbox.add(
                &mut tx,
                &OrderPlaced {
                    order: order.clone(),
                },
            ),
            request.clone(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    };
    let trace_id = {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        request.context().span().span_context().trace_id()
    };
    drop(request);
    assert_ne!(trace_id, TraceId::INVALID);

    let relay = outbox
        .relay(transport)
        .with_config(RelayConfig {
            poll_interval: Duration::from_millis(20),
            ..RelayConfig::default()
        })
        .spawn();
    let spans = spans_until_complete(trace_id).await;
    relay.shutdown().await;
    bus.shutdown().await;

    let request = one(&spans, "POST /orders", None);
    let insert = one(&spans, "eventbus.outbox.insert", None);
    let relay = one(&spans, "eventbus.relay.publish", None);
    let handle = one(&spans, "eventbus.handle", Some("otel-shipping"));
    let reply = one(&spans, "eventbus.publish", None);
    let reply_handled = one(&spans, "eventbus.handle", Some("otel-audit"));
    assert_eq!(
        request.parent_span_id,
        SpanId::INVALID,
        "the request is the root"
    );
    let chain = [request, insert, relay, handle, reply, reply_handled];
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].parent_span_id,
            pair[0].span_context.span_id(),
            "{} is not the child of {}",
            pair[1].name,
            pair[0].name
        );
    }
    assert_eq!(attr(relay, "message_id"), Some(id.to_string()));
    assert_eq!(
        attr(handle, "event").as_deref(),
        Some("test.otel.order-placed")
    );
    assert_eq!(
        attr(reply, "event").as_deref(),
        Some("test.otel.order-shipped")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_over_the_memory_transport() {
    one_trace_from_request_to_reply(MemoryTransport::new()).await;
}

/// The same across RabbitMQ on 127.0.0.1:5672: the trace context crosses
/// the broker in the message headers.
#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_rabbitmq() {
    use eventbus_core::transport::amqp::{AmqpConfig, AmqpTransport};
    let mut config = AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f");
    config.queue_expires = Some(Duration::from_secs(60));
    let transport = AmqpTransport::connect_with(config)
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672 (guest/guest)");
    one_trace_from_request_to_reply(transport).await;
}
