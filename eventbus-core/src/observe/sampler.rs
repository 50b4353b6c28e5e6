//! The gauge sampler: a small task that reads outbox and inbox sizes every
//! interval and sets their gauges (never per publish).

use std::sync::Arc;
use std::time::Duration;

use metrics::Gauge;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::names;
use crate::inbox::{self, Inbox, InboxStore};
use crate::outbox::{self, Outbox, OutboxStore};

struct SampledOutbox {
    store: Arc<dyn OutboxStore>,
    backlog: Gauge,
    parked: Gauge,
    oldest_age: Gauge,
}

struct SampledInbox {
    store: Arc<dyn InboxStore>,
    rows: Gauge,
}

/// Samples outbox backlog / parked rows / oldest age and inbox rows into
/// gauges (see [`crate::observe`]) every `interval` (default 5 s).
///
/// ```ignore
/// let sampler = GaugeSampler::new().outbox(&outbox).inbox(&inbox).spawn();
/// // ...
/// sampler.shutdown().await;
/// ```
pub struct GaugeSampler {
    interval: Duration,
    outboxes: Vec<SampledOutbox>,
    inboxes: Vec<SampledInbox>,
}

impl std::fmt::Debug for GaugeSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeSampler")
            .field("interval", &self.interval)
            .field("outboxes", &self.outboxes.len())
            .field("inboxes", &self.inboxes.len())
            .finish()
    }
}

impl Default for GaugeSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl GaugeSampler {
    /// A sampler of nothing yet, every 5 s.
    pub fn new() -> Self {
        Self {
            interval: Duration::from_secs(5),
            outboxes: Vec::new(),
            inboxes: Vec::new(),
        }
    }

    /// Samples every `interval`.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Samples `outbox`'s table.
    pub fn outbox<DB: outbox::sqlx_db::Db>(self, outbox: &Outbox<DB>) -> Self
    where
        Outbox<DB>: outbox::AsStore,
    {
        self.outbox_store(outbox.store())
    }

    /// Samples an outbox store.
    pub fn outbox_store(mut self, store: Arc<dyn OutboxStore>) -> Self {
        let table = store.table_name();
        self.outboxes.push(SampledOutbox {
            store,
            backlog: metrics::gauge!(names::OUTBOX_BACKLOG, "table" => table.clone()),
            parked: metrics::gauge!(names::OUTBOX_PARKED, "table" => table.clone()),
            oldest_age: metrics::gauge!(names::OUTBOX_OLDEST_AGE, "table" => table),
        });
        self
    }

    /// Samples `inbox`'s table.
    pub fn inbox<DB: outbox::sqlx_db::Db>(self, inbox: &Inbox<DB>) -> Self
    where
        Inbox<DB>: inbox::AsInboxStore,
    {
        let table = inbox.config().table_name().to_string();
        self.inbox_store(table, inbox.store())
    }

    /// Samples an inbox store whose table is `table` (the label).
    pub fn inbox_store(mut self, table: String, store: Arc<dyn InboxStore>) -> Self {
        self.inboxes.push(SampledInbox {
            store,
            rows: metrics::gauge!(names::INBOX_ROWS, "table" => table),
        });
        self
    }

    /// Reads every table once and sets the gauges. A table that cannot be
    /// read keeps its last value (and is logged).
    pub async fn sample(&self) {
        for o in &self.outboxes {
            match o.store.stats().await {
                Ok(s) => {
                    o.backlog.set(s.backlog as f64);
                    o.parked.set(s.parked as f64);
                    o.oldest_age.set(s.oldest_age.as_secs_f64());
                }
                Err(e) => tracing::warn!(error = %e, "sampling the outbox failed"),
            }
        }
        for i in &self.inboxes {
            match i.store.rows().await {
                Ok(n) => i.rows.set(n as f64),
                Err(e) => tracing::warn!(error = %e, "sampling the inbox failed"),
            }
        }
    }

    /// Samples on a new task until [`SamplerHandle::shutdown`].
    pub fn spawn(self) -> SamplerHandle {
        let token = CancellationToken::new();
        let stop = token.clone();
        let join = tokio::spawn(async move {
            loop {
                self.sample().await;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(self.interval) => {}
                }
            }
        });
        SamplerHandle { token, join }
    }
}

/// A running [`GaugeSampler`].
#[derive(Debug)]
pub struct SamplerHandle {
    token: CancellationToken,
    join: JoinHandle<()>,
}

impl SamplerHandle {
    /// Stops sampling and waits for the task.
    pub async fn shutdown(self) {
        self.token.cancel();
        let _ = self.join.await;
    }
}
