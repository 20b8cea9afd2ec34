//! What a pool and its models are configured with: [`ModelOptions`] per
//! model, [`ReloadPolicy`] per reload, and the pool's own settings.

use std::sync::Arc;
use std::time::Duration;

use crate::builder::Settings;

/// What a reload does when the new version cannot fit beside the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReloadPolicy {
    /// Refuse the reload with [`Error::InsufficientMemory`]; the old
    /// version keeps serving (the default: no downtime, ever).
    #[default]
    KeepServing,
    /// Unload the old version first (waiting for its leases), then load the
    /// new one: acquires wait for the new version meanwhile.
    UnloadFirst,
}

/// Per-model settings for [`ModelPool::add_with`](super::ModelPool::add_with).
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    pub(crate) keep_alive: Option<Option<Duration>>,
    pub(crate) pinned: bool,
}

impl ModelOptions {
    /// The pool's defaults: its keep-alive, not pinned.
    pub fn new() -> Self {
        Self::default()
    }

    /// This model's keep-alive (`None`: forever).
    pub fn keep_alive(mut self, ttl: Option<Duration>) -> Self {
        self.keep_alive = Some(ttl);
        self
    }

    /// Never evict this model (it is unloaded only when asked).
    pub fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = pinned;
        self
    }
}

pub(crate) struct PoolConfig<O> {
    pub(crate) budget: u64,
    /// What each model's manager is built with (its budget and runtime
    /// are the pool's to give).
    pub(crate) manager: Settings,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) max_queue: usize,
    pub(crate) concurrent_loads: usize,
    pub(crate) admission_timeout: Duration,
    pub(crate) retry_cooldown: Duration,
    /// The host tier's budget (0: none).
    pub(crate) host_budget: u64,
    /// Park CPU models too, by copying them (tests only: it saves nothing).
    pub(crate) simulate_host_tier: bool,
    pub(crate) options: Arc<O>,
}
