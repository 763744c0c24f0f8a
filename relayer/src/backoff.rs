//! The one backoff policy of the service's retry loops (a watcher step, the new-heads
//! subscription, the collector, a deliverer): exponential from a first delay to a cap,
//! with jitter so that the tasks of a process, or the processes of a fleet, do not retry
//! in step. The delays come from `backon`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The delays between the attempts of one retry loop.
pub(crate) struct Backoff {
    policy: ExponentialBuilder,
    delays: ExponentialBackoff,
    cap: Duration,
}

impl Backoff {
    /// Delays doubling from `first` to at most `cap` (each with up to as much again of
    /// jitter), without end.
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        let policy = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(cap)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self { delays: policy.build(), policy, cap }
    }

    /// The delay of a task's retry loop: a quarter of a second first, ten seconds at most.
    pub(crate) fn task() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(10))
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        // Without a maximum count the policy never runs out; the cap is the fallback.
        self.delays.next().unwrap_or(self.cap)
    }

    /// Starts over from the first delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.delays = self.policy.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_start_over_after_a_reset() {
        let (first, cap) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut backoff = Backoff::new(first, cap);
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= first && delays[0] < first * 2, "{delays:?}");
        // Jitter adds up to one more delay; the cap bounds the base.
        assert!(delays.iter().all(|d| *d <= cap * 2), "{delays:?}");
        assert!(delays[11] >= cap, "reached the cap: {delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() < first * 2, "back to the first delay");
    }
}
