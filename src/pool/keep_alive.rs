//! Keep-alive (issue "Several models under one memory budget", item 6): how
//! long a model stays resident once nobody uses it. The clock starts when
//! the last lease is released and never runs while a lease is held; an
//! acquire before the deadline cancels it; "forever" (the default) never
//! expires, though the model may still be evicted under memory pressure
//! (only a pin prevents that, and pins are not this module's business).
//!
//! The lease count is not kept here: the model's manager counts its leases
//! (one source of truth), and the pool tells the clock when the model
//! becomes busy (a lease taken) or idle (its last lease released).
//!
//! Pure: times are plain `Duration`s since any fixed origin (the pool uses
//! tokio's clock, so tests can pause it).

use std::time::Duration;

/// One model's keep-alive clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeepAlive {
    /// `None`: forever.
    ttl: Option<Duration>,
    /// Set while the model is idle: when it expires.
    deadline: Option<Duration>,
    idle: bool,
}

impl KeepAlive {
    /// A model just loaded, with no lease yet: its clock runs from `now`.
    pub(crate) fn new(ttl: Option<Duration>, now: Duration) -> Self {
        KeepAlive {
            ttl,
            deadline: ttl.map(|t| now.saturating_add(t)),
            idle: true,
        }
    }

    /// A lease was taken: the clock stops (an expiry not yet acted on is
    /// cancelled).
    pub(crate) fn busy(&mut self) {
        self.idle = false;
        self.deadline = None;
    }

    /// The last lease was released at `now`: the clock starts again.
    pub(crate) fn idle(&mut self, now: Duration) {
        self.idle = true;
        self.deadline = self.ttl.map(|t| now.saturating_add(t));
    }

    /// A new keep-alive, from `now` on (the clock restarts if it runs).
    pub(crate) fn set_ttl(&mut self, ttl: Option<Duration>, now: Duration) {
        self.ttl = ttl;
        if self.idle {
            self.deadline = ttl.map(|t| now.saturating_add(t));
        }
    }

    /// The keep-alive (`None`: forever).
    pub(crate) fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// When the model expires, if its clock runs.
    pub(crate) fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Whether the model has expired at `now`: never while busy.
    pub(crate) fn expired(&self, now: Duration) -> bool {
        self.idle && self.deadline.is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_clock_runs_only_while_idle() {
        let mut k = KeepAlive::new(Some(5 * S), Duration::ZERO);
        assert_eq!(k.deadline(), Some(5 * S));
        assert!(!k.expired(4 * S));
        k.busy();
        assert!(!k.expired(100 * S), "never while leased");
        k.idle(10 * S);
        assert_eq!(k.deadline(), Some(15 * S));
        assert!(!k.expired(14 * S));
        assert!(k.expired(15 * S));
        // An acquire after expiry (the pool had not acted yet) cancels it.
        k.busy();
        assert!(!k.expired(16 * S));
        // Forever never expires.
        let mut f = KeepAlive::new(None, Duration::ZERO);
        f.busy();
        f.idle(S);
        assert!(!f.expired(Duration::from_secs(1 << 40)));
        // A new keep-alive restarts a running clock.
        f.set_ttl(Some(S), 2 * S);
        assert!(f.expired(3 * S));
        // ... and not a stopped one.
        f.busy();
        f.set_ttl(Some(S), 4 * S);
        assert!(!f.expired(10 * S));
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Acquire,
        Release,
        Wait(u64),
    }

    proptest! {
        /// Over any sequence of acquires, releases and waits (the pool
        /// calls `busy` on every acquire and `idle` when the last lease
        /// goes): never expired while a lease is held; expired exactly when
        /// the time since the last release (or the load) reaches the
        /// keep-alive.
        #[test]
        fn expiry_matches_its_definition(
            ttl in prop::option::of(0u64..20),
            evs in prop::collection::vec(prop_oneof![
                Just(Ev::Acquire),
                Just(Ev::Release),
                (0u64..10).prop_map(Ev::Wait),
            ], 0..40),
        ) {
            let ttl = ttl.map(Duration::from_secs);
            let mut now = Duration::ZERO;
            let mut k = KeepAlive::new(ttl, now);
            let (mut leases, mut idle_since) = (0usize, Some(now));
            for ev in evs {
                match ev {
                    Ev::Acquire => {
                        k.busy();
                        leases += 1;
                        idle_since = None;
                    }
                    Ev::Release if leases > 0 => {
                        leases -= 1;
                        if leases == 0 {
                            k.idle(now);
                            idle_since = Some(now);
                        }
                    }
                    Ev::Release => {}
                    Ev::Wait(s) => now += Duration::from_secs(s),
                }
                let want = match (ttl, idle_since) {
                    (Some(t), Some(since)) => now - since >= t,
                    _ => false,
                };
                prop_assert_eq!(k.expired(now), want);
                if leases > 0 {
                    prop_assert!(!k.expired(now));
                }
            }
        }
    }
}
