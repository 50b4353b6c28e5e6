//! A token bucket on tokio time: at most `rate` permits per second after a
//! burst of `burst`. The inventory service takes one permit per stock write
//! — the database it protects sees a steady rate however fast orders arrive.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces permits `1/rate` apart; up to `burst` may be taken at once after
/// an idle period.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: Duration,
    /// When the next permit is free (the bucket's "theoretical arrival time").
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// `rate` permits per second (at least 1), `burst` at most at once (at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(1) / rate.max(1);
        let burst = interval * burst.max(1).saturating_sub(1);
        let now = Instant::now();
        Self {
            interval,
            burst,
            next: Mutex::new(now.checked_sub(burst).unwrap_or(now)),
        }
    }

    /// Waits for a permit.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let earliest = now.checked_sub(self.burst).unwrap_or(now);
            let slot = (*next).max(earliest);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_permits_after_the_burst() {
        let limiter = RateLimiter::new(100, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now() - start, Duration::ZERO, "the burst is free");
        for _ in 0..100 {
            limiter.acquire().await;
        }
        let took = Instant::now() - start;
        assert!(
            took >= Duration::from_millis(950) && took <= Duration::from_millis(1010),
            "100 permits at 100/s after a burst of 5 took {took:?}"
        );
    }
}
