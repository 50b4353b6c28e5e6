//! The bounded queue between the receiver and one worker.
//!
//! Built for hand-over in batches: the receiver appends a run of
//! deliveries under one lock and wakes the worker once; the worker takes
//! everything queued under one lock (swapping buffers, no copy) and works
//! through it. Per delivery that leaves a push, a pop and one atomic
//! decrement, where a channel costs a permit, a slot and a wake-up check
//! each.
//!
//! The bound counts every delivery the worker has not *started*, including
//! those it has taken into its own buffer, so a worker never holds more
//! than `capacity` waiting deliveries, however it takes them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::transport::Delivery;

/// The worker is gone (or the queue was closed): nothing more is accepted.
#[derive(Debug)]
pub(crate) struct Closed;

pub(crate) struct WorkerQueue {
    capacity: usize,
    /// Deliveries pushed and not yet started by the worker (≤ `capacity`).
    /// Raised under the lock by senders, lowered without it by the worker.
    queued: AtomicUsize,
    /// A sender waits on `space` for `queued` to drop below `capacity`.
    sender_waiting: AtomicBool,
    space: Notify,
    /// Wakes the worker when deliveries arrive or the senders are done.
    arrived: Notify,
    /// The worker stopped: pushes fail.
    worker_gone: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Delivery>,
    /// No more pushes will come: the worker stops once `items` is empty.
    senders_done: bool,
    /// The worker waits on `arrived`.
    worker_idle: bool,
}

impl WorkerQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            queued: AtomicUsize::new(0),
            sender_waiting: AtomicBool::new(false),
            space: Notify::new(),
            arrived: Notify::new(),
            worker_gone: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Room for this many more deliveries right now.
    pub(crate) fn free(&self) -> usize {
        self.capacity
            .saturating_sub(self.queued.load(Ordering::SeqCst))
    }

    // ===== sender side =====

    /// Moves as many deliveries from the front of `src` as there is room
    /// for, in order, and wakes the worker once. Returns how many moved.
    pub(crate) fn push_from(&self, src: &mut VecDeque<Delivery>) -> Result<usize, Closed> {
        if src.is_empty() {
            return Ok(0);
        }
        let (n, wake) = {
            let mut g = self.lock();
            if self.worker_gone.load(Ordering::SeqCst) || g.senders_done {
                return Err(Closed);
            }
            // Only senders raise `queued`, all under this lock: no overshoot.
            let n = self.free().min(src.len());
            if n == 0 {
                return Ok(0);
            }
            g.items.extend(src.drain(..n));
            self.queued.fetch_add(n, Ordering::SeqCst);
            (n, std::mem::take(&mut g.worker_idle))
        };
        if wake {
            self.arrived.notify_one();
        }
        Ok(n)
    }

    /// Waits until there is room for at least one delivery.
    pub(crate) async fn room(&self) -> Result<(), Closed> {
        loop {
            if self.worker_gone.load(Ordering::SeqCst) {
                return Err(Closed);
            }
            if self.free() > 0 {
                return Ok(());
            }
            // Register, announce the wait, then look again: the worker lowers
            // `queued` before it reads the flag, so one of us sees the other.
            // (Several senders may wait; each is woken.)
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.sender_waiting.store(true, Ordering::SeqCst);
            if self.free() > 0 || self.worker_gone.load(Ordering::SeqCst) {
                continue;
            }
            notified.await;
        }
    }

    /// No more pushes: the worker finishes what is queued, then stops.
    pub(crate) fn close(&self) {
        let wake = {
            let mut g = self.lock();
            g.senders_done = true;
            std::mem::take(&mut g.worker_idle)
        };
        if wake {
            self.arrived.notify_one();
        }
    }

    // ===== worker side =====

    /// Waits for deliveries and moves all of them into `into` (which must
    /// be empty). `false` once the senders are done and nothing is left.
    pub(crate) async fn take(&self, into: &mut VecDeque<Delivery>) -> bool {
        debug_assert!(into.is_empty());
        loop {
            {
                let mut g = self.lock();
                if !g.items.is_empty() {
                    std::mem::swap(&mut g.items, into);
                    return true;
                }
                if g.senders_done {
                    return false;
                }
                g.worker_idle = true;
            }
            self.arrived.notified().await;
        }
    }

    /// The worker starts one of the deliveries it took: its slot is free.
    pub(crate) fn started(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if self.sender_waiting.load(Ordering::SeqCst)
            && self.sender_waiting.swap(false, Ordering::SeqCst)
        {
            self.space.notify_waiters();
        }
    }

    /// The worker stopped (finished or dropped): refuse pushes, release
    /// waiting senders, and give back what is still queued (dropping an
    /// unsettled delivery returns it to the transport).
    pub(crate) fn worker_gone(&self) {
        self.worker_gone.store(true, Ordering::SeqCst);
        let left = std::mem::take(&mut self.lock().items);
        self.space.notify_waiters();
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerQueue;
    use crate::testing::{envelope, expect_delivery};
    use crate::transport::{Publisher, Subscriber, SubscriptionSpec};
    use crate::MemoryTransport;
    use std::collections::VecDeque;

    #[tokio::test]
    async fn bound_counts_deliveries_taken_but_not_started() {
        let t = MemoryTransport::new();
        let mut sub = t
            .subscribe(SubscriptionSpec::new("g-wq", ["ev.wq"]).prefetch(16))
            .await
            .unwrap();
        let mut src = VecDeque::new();
        for n in 0..5 {
            t.publish(&envelope("ev.wq", Some("k"), n)).await.unwrap();
            src.push_back(expect_delivery(&mut sub, "wq").await);
        }
        let q = WorkerQueue::new(2);
        assert_eq!(q.push_from(&mut src).unwrap(), 2);
        assert_eq!((src.len(), q.free()), (3, 0));
        let mut taken = VecDeque::new();
        assert!(q.take(&mut taken).await);
        assert_eq!(taken.len(), 2);
        // Taken, not started: still no room.
        assert_eq!(q.push_from(&mut src).unwrap(), 0);
        taken.pop_front();
        q.started();
        assert_eq!(q.free(), 1);
        q.room().await.unwrap();
        assert_eq!(q.push_from(&mut src).unwrap(), 1);
        q.close();
        assert!(q.push_from(&mut src).is_err(), "closed queue took more");
        let mut rest = VecDeque::new();
        assert!(q.take(&mut rest).await, "queued delivery lost at close");
        assert_eq!(rest.len(), 1);
        rest.clear();
        assert!(!q.take(&mut rest).await);
        q.worker_gone();
        assert!(q.room().await.is_err());
    }
}
