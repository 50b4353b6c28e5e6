//! OpenTelemetry glue (feature `otel`): the W3C trace context of the
//! current `tracing` span (as `tracing-opentelemetry` sees it) goes into
//! the envelopes made under it, and spans continue the context an
//! envelope carries.
//!
//! One trace follows an event through the system:
//!
//! ```text
//! your span (POST /orders) ─► eventbus.outbox.insert ─► eventbus.relay.publish
//!   ─► eventbus.handle ─► eventbus.publish (an event the handler publishes) ─► …
//! ```
//!
//! Each of those spans writes its own context into the envelope's
//! `traceparent` (and `tracestate`) header, so the next one is its child.
//! The headers cross the AMQP transport and the broker unchanged.
//!
//! Without the feature the `traceparent` is still propagated: the relay
//! passes it through, a handler's `eventbus.handle` span records the trace
//! id, and events published by a handler carry a child context of the
//! delivery's — only no OpenTelemetry spans exist.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::middleware::TraceParent;
use crate::{header, Envelope, Headers};

/// The OpenTelemetry context of `span`, as a `traceparent` and the
/// `tracestate` header value (`None` when empty); `None` if the span has
/// no valid OpenTelemetry context (no `tracing-opentelemetry` layer, a
/// disabled span).
pub fn span_trace(span: &tracing::Span) -> Option<(TraceParent, Option<String>)> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let state = sc.trace_state().header();
    Some((
        TraceParent {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            flags: sc.trace_flags().to_u8(),
        },
        (!state.is_empty()).then_some(state),
    ))
}

/// The context of the current `tracing` span (see [`span_trace`]).
pub fn current_trace() -> Option<(TraceParent, Option<String>)> {
    span_trace(&tracing::Span::current())
}

/// Makes `span` a child of the context `headers` carry (`traceparent`,
/// `tracestate`). Does nothing without a valid `traceparent`, or once the
/// span has started. Returns whether the parent was set.
pub fn set_parent_from(span: &tracing::Span, headers: &Headers) -> bool {
    if span.is_disabled() {
        return false;
    }
    let Some(tp) = headers.trace_parent() else {
        return false;
    };
    let state = headers
        .get(header::TRACESTATE)
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let sc = SpanContext::new(
        TraceId::from_bytes(tp.trace_id.to_be_bytes()),
        SpanId::from_bytes(tp.span_id.to_be_bytes()),
        TraceFlags::new(tp.flags),
        true,
        state,
    );
    if !sc.is_valid() {
        return false;
    }
    span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc))
        .is_ok()
}

/// Writes `span`'s context into `envelope`'s `traceparent` / `tracestate`
/// (unchanged if the span has none).
pub fn inject(span: &tracing::Span, envelope: &mut Envelope) {
    if let Some((tp, state)) = span_trace(span) {
        envelope
            .headers
            .insert_static(header::TRACEPARENT, tp.to_header_value());
        match state {
            Some(s) => {
                envelope.headers.insert_static(header::TRACESTATE, s);
            }
            None => {
                envelope.headers.remove(header::TRACESTATE);
            }
        }
    }
}

/// A tracer provider exporting spans over OTLP (HTTP/protobuf, e.g.
/// `http://127.0.0.1:4318/v1/traces`) in batches from a background thread,
/// as service `service_name` (feature `otlp`). Hand its tracer to
/// `tracing_opentelemetry::layer().with_tracer(..)`, and call
/// `provider.shutdown()` on exit to flush.
#[cfg(feature = "otlp")]
pub fn otlp_provider(
    endpoint: &str,
    service_name: &str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()?;
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build())
}
