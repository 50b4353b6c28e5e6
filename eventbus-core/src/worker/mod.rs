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

mod partitioner;

pub use partitioner::{HashPartitioner, Partitioner};

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use crate::middleware::Outcome;
use crate::pipeline::PipelineService;
use crate::transport::Delivery;
use crate::{Context, Ordering};
use partitioner::RoundRobin;

/// Default capacity of each worker's queue.
pub const DEFAULT_WORKER_QUEUE: usize = 64;

/// A fixed set of workers running one pipeline.
pub struct PartitionedWorkers {
    senders: Vec<mpsc::Sender<Delivery>>,
    ordering: Ordering,
    partitioner: Arc<dyn Partitioner>,
    round_robin: RoundRobin,
    tracker: TaskTracker,
}

impl std::fmt::Debug for PartitionedWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionedWorkers")
            .field("workers", &self.senders.len())
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
        let senders = (0..workers)
            .map(|index| {
                let (tx, rx) = mpsc::channel(queue_capacity.max(1));
                tracker.spawn(run_worker(index, group.clone(), rx, pipeline.clone()));
                tx
            })
            .collect();
        tracker.close();
        Self {
            senders,
            ordering,
            partitioner,
            round_robin: RoundRobin::default(),
            tracker,
        }
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// The worker a delivery with `key` goes to.
    pub fn worker_for(&self, key: Option<&str>) -> usize {
        match (self.ordering, key) {
            (Ordering::ByKey, Some(key)) => self.partitioner.partition(key, self.senders.len()),
            _ => self.round_robin.next(self.senders.len()),
        }
    }

    /// Queues `delivery` on its worker, waiting while that worker's queue is full.
    /// Gives the delivery back if the workers are shutting down.
    pub async fn dispatch(&self, delivery: Delivery) -> Result<(), Delivery> {
        let idx = self.worker_for(delivery.envelope.key.as_deref());
        self.senders[idx].send(delivery).await.map_err(|e| e.0)
    }

    /// Free slots across all worker queues right now (at least 1): how many
    /// deliveries the receiver can take without holding any back itself.
    pub(crate) fn free_slots(&self) -> usize {
        self.senders
            .iter()
            .map(mpsc::Sender::capacity)
            .sum::<usize>()
            .max(1)
    }

    /// Queues every delivery of `batch` on its worker, in order per worker,
    /// waiting while a worker's queue is full; `batch` is left empty.
    /// `scratch` is reusable per-worker grouping space. Fails (dropping the
    /// undelivered rest, which the transport redelivers) if the workers are
    /// shutting down.
    pub(crate) async fn dispatch_batch(
        &self,
        batch: &mut Vec<Delivery>,
        scratch: &mut Vec<VecDeque<Delivery>>,
    ) -> Result<(), ()> {
        if self.senders.len() == 1 || batch.len() == 1 {
            for delivery in batch.drain(..) {
                let idx = self.worker_for(delivery.envelope.key.as_deref());
                // On failure the rest of the drained batch is dropped with it.
                self.senders[idx].send(delivery).await.map_err(drop)?;
            }
            return Ok(());
        }
        // Group per worker so that each worker is handed its share of the
        // batch in one go (one wake-up) instead of one delivery at a time.
        scratch.resize_with(self.senders.len(), VecDeque::new);
        for delivery in batch.drain(..) {
            let idx = self.worker_for(delivery.envelope.key.as_deref());
            scratch[idx].push_back(delivery);
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
            for (idx, (sender, queue)) in self.senders.iter().zip(scratch.iter_mut()).enumerate() {
                while let Some(delivery) = queue.pop_front() {
                    match sender.try_send(delivery) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(delivery)) => {
                            queue.push_front(delivery);
                            blocked.get_or_insert(idx);
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
                    }
                }
            }
            let Some(idx) = blocked else {
                return Ok(());
            };
            if let Some(delivery) = scratch[idx].pop_front() {
                self.senders[idx].send(delivery).await.map_err(drop)?;
            }
        }
    }

    /// Stops accepting deliveries and waits until every queued one is handled and settled.
    pub async fn shutdown(self) {
        drop(self.senders);
        self.tracker.wait().await;
    }
}

async fn run_worker(
    index: usize,
    group: Arc<str>,
    mut rx: mpsc::Receiver<Delivery>,
    mut pipeline: PipelineService,
) {
    // One pipeline instance per worker, reused: deliveries are handled one
    // at a time, so no per-message clone of the service stack is needed.
    while let Some(delivery) = rx.recv().await {
        handle_one(&group, delivery, &mut pipeline).await;
    }
    tracing::debug!(group = %group, worker = index, "worker stopped");
}

/// Runs the pipeline for one delivery and settles it.
pub async fn handle_one(group: &Arc<str>, delivery: Delivery, pipeline: &mut PipelineService) {
    let (envelope, redelivered, acker) = delivery.into_parts();
    let cx = Context::new(envelope, group.clone(), redelivered);
    let id = cx.message_id();
    let result = match pipeline.ready().await {
        Ok(svc) => svc.call(cx).await,
        Err(e) => Err(e),
    };
    let settled = match result {
        Ok(Outcome::Handled) => acker.ack().await,
        Ok(Outcome::DeadLetter(env)) => acker.dead_letter(env).await,
        Err(e) => {
            // Only reachable if a user layer outside the dead-letter layer fails:
            // give the message back rather than lose it.
            tracing::error!(error = %e, message_id = %id, "pipeline failed; requeueing");
            acker.nack(true).await
        }
    };
    if let Err(e) = settled {
        // The transport will redeliver it (at-least-once); nothing is lost.
        tracing::warn!(error = %e, message_id = %id, group = %group, "could not settle delivery");
    }
}
