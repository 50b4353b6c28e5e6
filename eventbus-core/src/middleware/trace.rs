//! A tracing span per delivery, continuing the publisher's W3C trace.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context as TaskContext, Poll};

use tokio::task::futures::TaskLocalFuture;
use tower_layer::Layer;
use tower_service::Service;
use tracing::instrument::Instrumented;
use tracing::Instrument;

use crate::{Context, Envelope, HandleError};

/// A W3C `traceparent`: `00-<trace-id>-<parent-id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16-byte trace id.
    pub trace_id: u128,
    /// 8-byte id of the span that sent this.
    pub span_id: u64,
    /// Trace flags (bit 0 = sampled).
    pub flags: u8,
}

tokio::task_local! {
    static CURRENT: CurrentTrace;
}

/// The trace context of the delivery a task is handling (see
/// [`TraceParent::current`]).
///
/// Resolved on first use — by an enabled `eventbus.handle` span, or by the
/// handler publishing — so a delivery nobody traces skips parsing its
/// `traceparent` and drawing a span id. Kept in the delivery's [`Context`],
/// so all attempts share it and the task-local holds one pointer.
#[derive(Debug)]
pub struct CurrentTrace(TraceSource, AtomicU32);

#[derive(Debug)]
enum TraceSource {
    /// The delivery being handled.
    Delivery(Context),
    /// A fixed context ([`TraceParent::scope`]).
    Fixed(Box<TraceParent>),
}

/// The delivery a handler is handling while it publishes (see
/// [`Envelope::from_event`]): the new event's cause.
#[derive(Debug)]
pub(crate) struct Cause {
    /// The message being handled.
    pub(crate) id: uuid::Uuid,
    /// Its correlation id (its own id if it has none).
    pub(crate) correlation_id: String,
    /// The handler group handling it.
    pub(crate) group: String,
    /// How many events this attempt published before this one.
    pub(crate) position: u32,
}

impl Cause {
    /// The cause of an event being published now on this task, if a
    /// handler is running here; counts the publication.
    pub(crate) fn current() -> Option<Self> {
        CURRENT
            .try_with(|c| match &c.0 {
                TraceSource::Delivery(cx) => {
                    let env = cx.envelope();
                    Some(Self {
                        id: env.id,
                        correlation_id: env
                            .headers
                            .correlation_id()
                            .map(str::to_owned)
                            .unwrap_or_else(|| env.id.to_string()),
                        group: cx.group().to_owned(),
                        position: c.1.fetch_add(1, Ordering::Relaxed),
                    })
                }
                TraceSource::Fixed(_) => None,
            })
            .ok()
            .flatten()
    }

    /// The id of the event: the same for the same cause, group and
    /// position, so an attempt that is retried (or a message delivered
    /// again) publishes the same ids and inboxes downstream drop the
    /// repeats. A name-based UUID (version 5) in the cause's id as
    /// namespace, named `<group>/<position>` (two groups handling one
    /// message publish different ids).
    pub(crate) fn derived_id(&self) -> uuid::Uuid {
        let name = format!("{}/{}", self.group, self.position);
        uuid::Uuid::new_v5(&self.id, name.as_bytes())
    }
}

impl CurrentTrace {
    fn get(&self) -> TraceParent {
        match &self.0 {
            TraceSource::Delivery(cx) => cx.trace(|env| continue_trace(Some(env)).1),
            TraceSource::Fixed(t) => **t,
        }
    }
}

/// The publisher's trace context from `envelope`'s header (if valid), and the
/// context of the handling span: a child of it, or a new root.
fn continue_trace(envelope: Option<&Envelope>) -> (Option<TraceParent>, TraceParent) {
    let parent = envelope.and_then(|e| e.headers.trace_parent());
    let trace = parent
        .map(|p| p.child())
        .unwrap_or_else(TraceParent::new_root);
    (parent, trace)
}

impl TraceParent {
    /// A new root trace (random ids, sampled).
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero(fastrand::u128(..), || fastrand::u128(..)),
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// Parses the header value; `None` if malformed (then a new root is started).
    pub fn parse(s: &str) -> Option<Self> {
        // `vv-<32 hex>-<16 hex>-ff[...]`, checked by position (this runs for
        // every delivery).
        let b = s.trim().as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        if &b[..2] == b"ff" || b[..2].contains(&b'-') {
            return None;
        }
        let trace_id = u128::from(parse_hex(&b[3..19])?) << 64 | u128::from(parse_hex(&b[19..35])?);
        let span_id = parse_hex(&b[36..52])?;
        let flags = u8::try_from(parse_hex(&b[53..55])?).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The header value, `00-<trace-id>-<span-id>-<flags>` (same as `Display`).
    pub fn to_header_value(&self) -> String {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        write_hex(&mut buf[3..35], &self.trace_id.to_be_bytes());
        buf[35] = b'-';
        write_hex(&mut buf[36..52], &self.span_id.to_be_bytes());
        buf[52] = b'-';
        write_hex(&mut buf[53..55], &[self.flags]);
        String::from_utf8(buf.to_vec()).expect("hex digits are ASCII")
    }

    /// A child span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The trace context of the handler running on this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(CurrentTrace::get).ok()
    }

    /// The traceparent to put on a message published now: a child of the
    /// current handler's span, or a new root.
    pub fn for_new_message() -> Self {
        Self::current()
            .map(|t| t.child())
            .unwrap_or_else(Self::new_root)
    }

    /// Runs `fut` with `self` as the current trace context.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT
            .scope(
                CurrentTrace(TraceSource::Fixed(Box::new(self)), AtomicU32::new(0)),
                fut,
            )
            .await
    }
}

/// A random, non-zero span id.
fn new_span_id() -> u64 {
    nonzero(fastrand::u64(..), || fastrand::u64(..))
}

/// `first`, or (in the rare case it is zero, which W3C ids must not be)
/// the first non-zero value of `again`. Cheaper than sampling a range.
fn nonzero<T: Default + PartialEq>(first: T, mut again: impl FnMut() -> T) -> T {
    let mut v = first;
    while v == T::default() {
        v = again();
    }
    v
}

/// Hex digit values by byte; `0xff` for bytes that are not hex digits.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parses up to 16 hex digits (either case); `None` on any other byte.
fn parse_hex(digits: &[u8]) -> Option<u64> {
    let mut acc = 0u64;
    let mut bad = 0u8;
    for &c in digits {
        let d = HEX_VALUE[usize::from(c)];
        bad |= d;
        acc = acc << 4 | u64::from(d & 0xf);
    }
    // Every valid digit is < 16, so any 0xff marks an invalid byte.
    (bad & 0xf0 == 0).then_some(acc)
}

/// Writes the bytes of `v` as lower-case hex, most significant first.
fn write_hex(out: &mut [u8], v: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(v) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// Wraps an attempt at a delivery in an `eventbus.handle` span carrying
/// event, group, message id, key and the W3C trace id (all attempts of a
/// delivery share the trace context), and makes the delivery current so
/// events published by the handler continue its trace and record it as
/// their cause (see [`Envelope::from_event`]).
#[derive(Debug, Clone, Default)]
pub struct TraceLayer;

impl TraceLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

/// See [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

// ===== impl Trace =====

impl<S, R> Service<Context> for Trace<S>
where
    S: Service<Context, Response = R, Error = HandleError>,
{
    type Response = R;
    type Error = HandleError;
    type Future = Instrumented<TaskLocalFuture<CurrentTrace, S::Future>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Context) -> Self::Future {
        let env = req.envelope();
        let span = tracing::info_span!(
            "eventbus.handle",
            event = %env.name,
            group = %req.group(),
            message_id = %env.id,
            key = env.key.as_deref().unwrap_or(""),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
            redelivered = req.redelivered(),
        );
        if !span.is_disabled() {
            #[allow(unused_mut)]
            let (parent, mut trace) = continue_trace(Some(env));
            // Feature `otel`: the span is the publisher's child, and its
            // own context is the one handlers' events continue.
            #[cfg(feature = "otel")]
            {
                crate::observe::otel::set_parent_from(&span, &env.headers);
                if let Some((own, _)) = crate::observe::otel::span_trace(&span) {
                    trace = own;
                }
            }
            let trace = req.set_trace(trace);
            span.record("trace_id", format_args!("{:032x}", trace.trace_id));
            span.record("span_id", format_args!("{:016x}", trace.span_id));
            span.record(
                "parent_span_id",
                format_args!("{:016x}", parent.map(|p| p.span_id).unwrap_or(0)),
            );
        }
        // One per attempt: the attempt's publications are numbered from 0.
        let current = CurrentTrace(TraceSource::Delivery(req.clone()), AtomicU32::new(0));
        let fut = self.inner.call(req);
        CURRENT.scope(current, fut).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::{TraceLayer, TraceParent};
    use crate::{Context, Envelope, HandleError};
    use std::sync::{Arc, Mutex};
    use tower::{service_fn, ServiceExt};
    use tower_layer::Layer;

    /// Runs a delivery of `envelope` through the trace layer; returns the
    /// trace contexts a handler publishing twice would put on its messages.
    async fn published_by_handler(envelope: Envelope) -> Vec<TraceParent> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let svc = TraceLayer::new().layer(service_fn(move |_cx: Context| {
            let s = s.clone();
            async move {
                assert_eq!(
                    TraceParent::current(),
                    TraceParent::current(),
                    "stable within a delivery"
                );
                let mut s = s.lock().unwrap();
                s.push(TraceParent::for_new_message());
                s.push(TraceParent::for_new_message());
                Ok::<(), HandleError>(())
            }
        }));
        let cx = Context::new(Arc::new(envelope), Arc::from("g"), false);
        svc.oneshot(cx).await.unwrap();
        let v = seen.lock().unwrap().clone();
        v
    }

    #[tokio::test]
    async fn handlers_continue_the_delivery_trace() {
        let parent = TraceParent::new_root();
        let env = crate::testing::envelope("ev", None, 1)
            .with_header(crate::header::TRACEPARENT, parent.to_header_value());
        let out = published_by_handler(env).await;
        assert_eq!(out.len(), 2);
        for t in &out {
            assert_eq!(t.trace_id, parent.trace_id, "trace not continued");
            assert_ne!(t.span_id, parent.span_id, "no new span");
        }
        assert_ne!(out[0].span_id, out[1].span_id);
        assert_eq!(
            TraceParent::current(),
            None,
            "context leaked out of the delivery"
        );
    }

    #[tokio::test]
    async fn deliveries_without_valid_traceparent_start_a_new_trace() {
        let env =
            crate::testing::envelope("ev", None, 1).with_header(crate::header::TRACEPARENT, "junk");
        let out = published_by_handler(env).await;
        assert_eq!(out[0].trace_id, out[1].trace_id, "one trace per delivery");
    }

    #[test]
    fn header_value_matches_display_and_parses_back() {
        for _ in 0..1000 {
            let t = TraceParent {
                flags: fastrand::u8(..),
                ..TraceParent::new_root()
            };
            let v = t.to_header_value();
            assert_eq!(v, t.to_string());
            assert_eq!(TraceParent::parse(&v), Some(t));
            assert_eq!(TraceParent::parse(&v.to_uppercase()), Some(t));
        }
    }

    #[test]
    fn parse_accepts_w3c_examples_and_rejects_malformed() {
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let t = TraceParent::parse(ok).unwrap();
        assert_eq!(t.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(t.span_id, 0xb7ad6b7169203331);
        assert_eq!(t.flags, 1);
        assert_eq!(TraceParent::parse(&format!("  {ok}\n")), Some(t));
        // Future versions may append fields.
        assert_eq!(TraceParent::parse(&format!("{ok}-extra")), Some(t));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",
            "000-af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
