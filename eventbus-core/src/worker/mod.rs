//! Key-ordered partitioned workers.
//!
//! A delivery goes to worker `hash(key) % N`: the same key always lands on
//! the same worker, which handles its deliveries one at a time, so events of
//! one key are handled in the order they arrived; different keys run in
//! parallel. Unkeyed (or unordered) deliveries are spread round-robin.
//! Each worker's queue is bounded: when a worker falls behind,
//! [`PartitionedWorkers::dispatch`] waits, which stops the receiver from
//! pulling more deliveries (backpressure up to the transport's prefetch).
//! A delivery is settled only after its pipeline finished.
//!
//! Hand-over is batched: the receiver gives each worker its share of what
//! the transport had ready in one go, and a worker takes everything queued
//! for it at once. A worker reuses one pipeline and one delivery context
//! for all its deliveries, and settles the acks of deliveries it handled
//! back to back together, before it waits for anything (memory transport).

mod parking;
mod partitioner;
mod queue;

pub use partitioner::{HashPartitioner, Partitioner};

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use crate::middleware::Outcome;
use crate::pipeline::PipelineService;
use std::future::{poll_fn, Future};
use std::task::Poll;

use crate::handler::ContextSlot;
use crate::transport::memory::AckBatch;
use crate::transport::{Delivery, DeliveryAcker, TransportError, TransportFuture};
use crate::{Context, HandleError, Ordering};
use parking::{Parking, Retry};
use partitioner::RoundRobin;
use queue::WorkerQueue;
use tokio::time::Instant;

/// Default capacity of each worker's queue.
pub const DEFAULT_WORKER_QUEUE: usize = 64;

/// A fixed set of workers running one pipeline.
///
/// Dropping it (or [`PartitionedWorkers::shutdown`]) closes the queues:
/// the workers finish what they hold, then stop.
pub struct PartitionedWorkers {
    queues: Vec<Arc<WorkerQueue>>,
    ordering: Ordering,
    partitioner: Arc<dyn Partitioner>,
    round_robin: RoundRobin,
    tracker: TaskTracker,
    /// Cancelled to stop at once (see [`PartitionedWorkers::stop_now`]).
    stop: CancellationToken,
}

impl std::fmt::Debug for PartitionedWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionedWorkers")
            .field("workers", &self.queues.len())
            .field("ordering", &self.ordering)
            .finish()
    }
}

impl PartitionedWorkers {
    /// Spawns `workers` tasks running `pipeline` for `group`, each with a
    /// queue of `queue_capacity` deliveries.
    pub fn spawn(
        group: &str,
        workers: usize,
        ordering: Ordering,
        queue_capacity: usize,
        pipeline: PipelineService,
    ) -> Self {
        Self::spawn_with(
            group,
            workers,
            ordering,
            queue_capacity,
            pipeline,
            Arc::new(HashPartitioner),
        )
    }

    /// Like [`PartitionedWorkers::spawn`] with a custom partitioner.
    pub fn spawn_with(
        group: &str,
        workers: usize,
        ordering: Ordering,
        queue_capacity: usize,
        pipeline: PipelineService,
        partitioner: Arc<dyn Partitioner>,
    ) -> Self {
        let workers = workers.max(1);
        let group: Arc<str> = Arc::from(group);
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let queues = (0..workers)
            .map(|index| {
                let queue = Arc::new(WorkerQueue::new(queue_capacity));
                tracker.spawn(run_worker(
                    index,
                    group.clone(),
                    queue.clone(),
                    pipeline.clone(),
                    ordering == Ordering::ByKey,
                    stop.clone(),
                ));
                queue
            })
            .collect();
        tracker.close();
        Self {
            queues,
            ordering,
            partitioner,
            round_robin: RoundRobin::default(),
            tracker,
            stop,
        }
    }

    /// A token that, when cancelled, makes the workers stop at once: the
    /// handler calls in progress are abandoned (dropped), and every
    /// delivery the workers hold — in progress, queued or parked for a
    /// retry — goes back to the transport for redelivery. What
    /// [`crate::RunningBus::shutdown`] does when its deadline passes.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// The worker a delivery with `key` goes to.
    pub fn worker_for(&self, key: Option<&str>) -> usize {
        match (self.ordering, key) {
            (Ordering::ByKey, Some(key)) => self.partitioner.partition(key, self.queues.len()),
            _ => self.round_robin.next(self.queues.len()),
        }
    }

    /// Queues `delivery` on its worker, waiting while that worker's queue is full.
    /// Gives the delivery back if the workers are shutting down.
    pub async fn dispatch(&self, delivery: Delivery) -> Result<(), Delivery> {
        let queue = &self.queues[self.worker_for(delivery.envelope.key.as_deref())];
        let mut one = VecDeque::from([delivery]);
        loop {
            match queue.push_from(&mut one) {
                Ok(1) => return Ok(()),
                Ok(_) => {}
                Err(queue::Closed) => break,
            }
            if queue.room().await.is_err() {
                break;
            }
        }
        Err(one.pop_front().expect("not queued"))
    }

    /// Free slots across all worker queues right now (at least 1): how many
    /// deliveries the receiver can take without holding any back itself.
    pub(crate) fn free_slots(&self) -> usize {
        self.queues.iter().map(|q| q.free()).sum::<usize>().max(1)
    }

    /// Queues every delivery of `batch` on its worker, in order per worker,
    /// waiting while a worker's queue is full; `batch` is left empty.
    /// `scratch` is reusable per-worker grouping space. Each worker is
    /// handed its share in one go (one lock, at most one wake-up). Fails
    /// (dropping the undelivered rest, which the transport redelivers) if
    /// the workers are shutting down.
    pub(crate) async fn dispatch_batch(
        &self,
        batch: &mut Vec<Delivery>,
        scratch: &mut Vec<VecDeque<Delivery>>,
    ) -> Result<(), ()> {
        scratch.resize_with(self.queues.len(), VecDeque::new);
        if self.queues.len() == 1 {
            scratch[0].extend(batch.drain(..));
        } else {
            for delivery in batch.drain(..) {
                let idx = self.worker_for(delivery.envelope.key.as_deref());
                scratch[idx].push_back(delivery);
            }
        }
        let result = self.hand_over(scratch).await;
        if result.is_err() {
            scratch.iter_mut().for_each(VecDeque::clear);
        }
        result
    }

    /// Moves every grouped delivery to its worker's queue, in order per
    /// worker. Fills every queue that has room before waiting on a full one,
    /// so one busy worker does not hold back the others' share.
    async fn hand_over(&self, scratch: &mut [VecDeque<Delivery>]) -> Result<(), ()> {
        loop {
            let mut blocked = None;
            for (idx, (queue, group)) in self.queues.iter().zip(scratch.iter_mut()).enumerate() {
                queue.push_from(group).map_err(drop)?;
                if !group.is_empty() {
                    blocked.get_or_insert(idx);
                }
            }
            let Some(idx) = blocked else {
                return Ok(());
            };
            self.queues[idx].room().await.map_err(drop)?;
        }
    }

    /// Stops accepting deliveries and waits until every queued one is handled and settled.
    pub async fn shutdown(self) {
        let tracker = self.tracker.clone();
        drop(self);
        tracker.wait().await;
    }
}

impl Drop for PartitionedWorkers {
    fn drop(&mut self) {
        for q in &self.queues {
            q.close();
        }
    }
}

/// Marks the worker's queue as abandoned when the worker stops, however it
/// stops (finished, or its task dropped at runtime shutdown).
struct WorkerGone<'a>(&'a WorkerQueue);

impl Drop for WorkerGone<'_> {
    fn drop(&mut self) {
        self.0.worker_gone();
    }
}

async fn run_worker(
    index: usize,
    group: Arc<str>,
    queue: Arc<WorkerQueue>,
    pipeline: PipelineService,
    keyed: bool,
    stop: CancellationToken,
) {
    let _gone = WorkerGone(&queue);
    let mut w = Worker {
        slot: ContextSlot::new(group.clone()),
        group,
        pipeline,
        // Acks of deliveries handled back to back without waiting are
        // settled together, before the worker waits for anything.
        acks: AckBatch::default(),
        parking: Parking::default(),
        keyed,
        stop,
        stopped: false,
        settling: FuturesUnordered::new(),
    };
    let mut batch = VecDeque::new();
    loop {
        // Wait for deliveries, or until the next parked message is due.
        let due = w.parking.next_due();
        if due.is_some() {
            w.acks.settle();
        }
        let more = tokio::select! {
            more = queue.take(&mut batch) => more,
            () = sleep_until_some(due) => true,
            () = w.stop.cancelled() => false,
            Some((id, r)) = w.settling.next(), if !w.settling.is_empty() => {
                settled(&w.group, id, r);
                true
            }
        };
        if !more || w.stopped {
            break;
        }
        // Due retries first: they are older than anything just taken.
        if !w.parking.is_empty() {
            w.run_due().await;
        }
        while let Some(delivery) = batch.pop_front() {
            queue.started();
            let delivery = if w.parking.is_empty() {
                delivery
            } else {
                // A delivery of a parked key waits behind it.
                match w.parking.defer(delivery) {
                    Ok(()) => continue,
                    Err(d) => d,
                }
            };
            if w.stopped {
                settled(&w.group, delivery.envelope.id, delivery.nack(true).await);
                continue;
            }
            let (envelope, redelivered, acker) = delivery.into_parts();
            let cx = w.slot.context(envelope, redelivered);
            w.attempt(cx, acker, VecDeque::new()).await;
        }
        w.acks.settle();
        if w.stopped {
            break;
        }
        // Taking from the queue does not count against the task's
        // cooperative budget; this does, so a worker that always finds work
        // still lets the other tasks on its thread run.
        tokio::task::consume_budget().await;
    }
    w.acks.settle();
    w.finish_settling().await;
    // Stopping: parked messages (and those waiting behind them) go back to
    // the transport, in order, to be redelivered.
    for (retry, backlog) in w.parking.drain() {
        let id = retry.cx.message_id();
        settled(&w.group, id, retry.acker.nack(true).await);
        for d in backlog {
            let id = d.envelope.id;
            settled(&w.group, id, d.nack(true).await);
        }
    }
    tracing::debug!(group = %w.group, worker = index, "worker stopped");
}

/// Sleeps until `due`, or forever without one.
async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// One worker's state: its pipeline, reusable context, held acks and
/// parked messages. Owned by the worker's task alone.
struct Worker {
    group: Arc<str>,
    pipeline: PipelineService,
    /// One delivery context, reused: deliveries are handled one at a time,
    /// so it need not be made anew per message.
    slot: ContextSlot,
    acks: AckBatch,
    parking: Parking,
    /// Key-ordered group: a parked message holds back its key.
    keyed: bool,
    /// Cancelled: stop at once ([`PartitionedWorkers::stop_token`]).
    stop: CancellationToken,
    /// `stop` was seen: hand everything back instead of handling it.
    stopped: bool,
    /// Settlements still on their way to the broker.
    settling: FuturesUnordered<Settling>,
}

/// A settlement on its way, with the message id to log a failure.
type Settling = BoxFuture<'static, (uuid::Uuid, Result<(), TransportError>)>;

/// Most settlements a worker lets run unawaited.
const MAX_SETTLING: usize = 256;

impl Worker {
    /// Runs one attempt at `cx` and settles it — or parks it when the
    /// pipeline asks for a retry, with `backlog` (deliveries of its key that
    /// waited behind it) kept behind it. Returns `backlog` unless parked.
    async fn attempt(
        &mut self,
        cx: Context,
        acker: DeliveryAcker,
        backlog: VecDeque<Delivery>,
    ) -> Option<VecDeque<Delivery>> {
        let id = cx.message_id();
        if self.stopped {
            settled(&self.group, id, acker.nack(true).await);
            return Some(backlog);
        }
        let result = match poll_fn(|t| self.pipeline.poll_ready(t)).await {
            Ok(()) => {
                let handling = self.pipeline.call(cx.clone());
                tokio::pin!(handling);
                match poll_fn(|t| Poll::Ready(handling.as_mut().poll(t))).await {
                    Poll::Ready(result) => result,
                    Poll::Pending => {
                        // The handler waits: settle the held acks first.
                        self.acks.settle();
                        tokio::select! {
                            result = &mut handling => result,
                            () = self.stop.cancelled() => {
                                // Abandon the attempt; the message is redelivered.
                                self.stopped = true;
                                tracing::warn!(group = %self.group, message_id = %id, "stopping: handler abandoned, message requeued");
                                Ok(Outcome::Retry { after: std::time::Duration::ZERO })
                            }
                        }
                    }
                }
            }
            Err(e) => Err(e),
        };
        if self.stopped {
            settled(&self.group, id, acker.nack(true).await);
            return Some(backlog);
        }
        if let Ok(Outcome::Retry { after }) = result {
            let key = if self.keyed {
                cx.key().map(str::to_owned)
            } else {
                None
            };
            let retry = Retry {
                cx: cx.next_attempt(),
                acker,
            };
            self.parking
                .park(key, retry, Instant::now() + after, backlog);
            return None;
        }
        if let Some(settling) = settle(id, result, acker, Some(&mut self.acks)) {
            if settling.is_ready() {
                settled(&self.group, id, settling.await);
            } else {
                self.acks.settle();
                self.settle_later(id, settling).await;
            }
        }
        self.slot.release(cx);
        Some(backlog)
    }

    /// Lets a broker's settlement (an ack on its way) complete while the
    /// worker goes on with the next delivery: the order of acks does not
    /// matter, and waiting for each one would cap a worker at one ack round
    /// per message. At most [`MAX_SETTLING`] are outstanding.
    async fn settle_later(&mut self, id: uuid::Uuid, settling: TransportFuture<'static>) {
        self.settling
            .push(Box::pin(async move { (id, settling.await) }));
        // Poll it (and any others now complete) once, so its frame goes out now.
        self.reap_settled();
        while self.settling.len() >= MAX_SETTLING {
            if let Some((id, r)) = self.settling.next().await {
                settled(&self.group, id, r);
            }
        }
    }

    /// Logs the settlements that completed, without waiting.
    fn reap_settled(&mut self) {
        while let Some(Some((id, r))) = self.settling.next().now_or_never() {
            settled(&self.group, id, r);
        }
    }

    /// Waits for every outstanding settlement.
    async fn finish_settling(&mut self) {
        while let Some((id, r)) = self.settling.next().await {
            settled(&self.group, id, r);
        }
    }

    /// Runs the parked messages that are due; after each one that is done,
    /// the deliveries that waited behind it, in order, until one of them
    /// parks the key again.
    async fn run_due(&mut self) {
        if self.stopped {
            return;
        }
        let now = Instant::now();
        while let Some((_key, retry, backlog)) = self.parking.take_due(now) {
            let Some(mut rest) = self.attempt(retry.cx, retry.acker, backlog).await else {
                continue;
            };
            while let Some(d) = rest.pop_front() {
                let (envelope, redelivered, acker) = d.into_parts();
                let cx = self.slot.context(envelope, redelivered);
                match self.attempt(cx, acker, std::mem::take(&mut rest)).await {
                    Some(back) => rest = back,
                    None => break,
                }
            }
        }
    }
}

/// Runs the pipeline for one delivery and settles it.
pub async fn handle_one(group: &Arc<str>, delivery: Delivery, pipeline: &mut PipelineService) {
    let (envelope, redelivered, acker) = delivery.into_parts();
    let mut cx = Context::new(envelope, group.clone(), redelivered);
    let id = cx.message_id();
    let result = loop {
        let result = match pipeline.ready().await {
            Ok(svc) => svc.call(cx.clone()).await,
            Err(e) => Err(e),
        };
        match result {
            // Outside a worker nothing else waits on this task: retry in place.
            Ok(Outcome::Retry { after }) => {
                tokio::time::sleep(after).await;
                cx = cx.next_attempt();
            }
            other => break other,
        }
    };
    if let Some(settling) = settle(id, result, acker, None) {
        settled(group, id, settling.await);
    }
}

/// Settles delivery `id` through `acker` as the pipeline's `result` says.
/// With `acks`, an ack of the memory transport joins the batch (`None`
/// returned); otherwise the transport's operation is returned, to await.
fn settle(
    id: uuid::Uuid,
    result: Result<Outcome, HandleError>,
    acker: DeliveryAcker,
    acks: Option<&mut AckBatch>,
) -> Option<TransportFuture<'static>> {
    match result {
        Ok(Outcome::Handled) => match acks {
            Some(batch) => acker.ack_in(batch),
            None => Some(acker.ack()),
        },
        Ok(Outcome::DeadLetter(env)) => Some(acker.dead_letter(*env)),
        Ok(Outcome::Retry { .. }) => Some(acker.nack(true)),
        Err(e) => {
            // Only reachable if a user layer outside the dead-letter layer fails:
            // give the message back rather than lose it.
            tracing::error!(error = %e, message_id = %id, "pipeline failed; requeueing");
            Some(acker.nack(true))
        }
    }
}

/// Logs a failed settlement.
fn settled(group: &str, id: uuid::Uuid, result: Result<(), TransportError>) {
    if let Err(e) = result {
        // The transport will redeliver it (at-least-once); nothing is lost.
        tracing::warn!(error = %e, message_id = %id, group = %group, "could not settle delivery");
    }
}
