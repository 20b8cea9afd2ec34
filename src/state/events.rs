//! What a subscriber receives: every transition in order
//! ([`Subscription`]), and lease releases ([`LeaseReleases`]).

use tokio::sync::{broadcast, watch};

use super::StateEvent;

/// A stream of every transition, in order.
///
/// Created by [`ModelManager::subscribe`](crate::ModelManager::subscribe). A
/// subscriber that falls more than 1024 transitions behind is told how many it
/// missed ([`RecvError::Lagged`]) and then continues with the oldest kept.
#[derive(Debug)]
pub struct Subscription {
    pub(super) rx: broadcast::Receiver<StateEvent>,
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber fell behind; this many events were dropped.
    #[error("missed {0} state events")]
    Lagged(u64),
    /// The manager is gone; no more events will come.
    #[error("the model manager is gone")]
    Closed,
}

/// Why [`Subscription::try_recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No event is waiting.
    #[error("no state event waiting")]
    Empty,
    /// The subscriber fell behind; this many events were dropped.
    #[error("missed {0} state events")]
    Lagged(u64),
    /// The manager is gone; no more events will come.
    #[error("the model manager is gone")]
    Closed,
}

impl Subscription {
    /// Wait for the next transition.
    ///
    /// Cancel safe: dropping the future loses no event.
    pub async fn recv(&mut self) -> Result<StateEvent, RecvError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => RecvError::Lagged(n),
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }

    /// Take the next transition if one is waiting.
    pub fn try_recv(&mut self) -> Result<StateEvent, TryRecvError> {
        self.rx.try_recv().map_err(|e| match e {
            broadcast::error::TryRecvError::Empty => TryRecvError::Empty,
            broadcast::error::TryRecvError::Lagged(n) => TryRecvError::Lagged(n),
            broadcast::error::TryRecvError::Closed => TryRecvError::Closed,
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Wait for the next transition without an async runtime (for threads
    /// outside one, such as a C host's).
    pub fn blocking_recv(&mut self) -> Result<StateEvent, RecvError> {
        self.rx.blocking_recv().map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => RecvError::Lagged(n),
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }
}

/// Lease releases of a manager, from the moment this was taken: for a
/// caller that waits for memory leases hold (a pool's admission) without
/// polling. Take it *before* checking whether to wait, so that a release in
/// between is not missed.
#[derive(Debug)]
pub struct LeaseReleases {
    pub(super) rx: watch::Receiver<u64>,
}

impl LeaseReleases {
    /// Wait until a lease has been released since this was taken or since
    /// the last call returned: `true`; `false` at once when the manager and
    /// every lease it gave are gone, so no lease can be released any more.
    /// Cancel safe.
    pub async fn released(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}
