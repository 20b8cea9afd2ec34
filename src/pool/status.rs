//! What the pool shows: a status per model, the pool's counters (also as a
//! Prometheus text exposition), and the ordered stream of pool events.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::io::ModelSource;
use crate::state::State;

/// One model of a [`ModelPool`](super::ModelPool), as it is now.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    /// The id the model was added under.
    pub id: String,
    /// `Ready` while a version serves leases (even while a reload loads
    /// beside it); else `Loading`, `Unloading` (being freed), `Failed` (the
    /// last load failed) or `Idle` (known, not resident).
    pub state: State,
    /// The version serving leases. Every load attempt (a first load, a
    /// load on demand, a reload), successful or not, takes the next number,
    /// starting at 1.
    pub version: Option<u64>,
    /// The version loading (a first load, a load on demand, or a reload).
    pub loading_version: Option<u64>,
    /// The source new leases get (the serving version's).
    pub source: Arc<ModelSource>,
    /// Bytes charged against the budget for this model, all versions
    /// together (the estimate while loading, the measured bytes once
    /// ready, until the memory is freed), and the working memory its
    /// leases reserved ([`ModelPool::acquire_with`](crate::ModelPool::acquire_with)).
    pub charged_bytes: u64,
    /// Bytes of model memory its managers hold right now, as measured.
    pub resident_bytes: u64,
    /// Leases held, on every version.
    pub leases: usize,
    /// Callers waiting for it (acquires waiting for its load).
    pub waiters: usize,
    /// Time since it was last acquired or released (`None`: never used).
    pub idle_for: Option<Duration>,
    /// Its keep-alive (`None`: forever).
    pub keep_alive: Option<Duration>,
    /// Time left before it expires, while its keep-alive clock runs.
    pub expires_in: Option<Duration>,
    /// Pinned models are never evicted.
    pub pinned: bool,
    /// Why its last load or reload failed (kept until a load succeeds).
    pub last_error: Option<Error>,
    /// Parked: not on the device, its copy in host memory (the host tier)
    /// made; the next acquire loads it back from there. Its `state` is
    /// `Unloading` until its device memory is freed, then `Idle` (and
    /// `Loading` while it comes back).
    pub parked: bool,
    /// Bytes charged against the host budget for it: its copy in host
    /// memory (kept while the model is back on the device, as long as the
    /// tier has room: evicting it again then frees its device memory at
    /// once), or the copy being made.
    pub parked_bytes: u64,
}

/// The pool's counters since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounters {
    /// Loads started (admitted against the budget).
    pub loads: u64,
    /// Acquires served by a resident model at once.
    pub hits: u64,
    /// Acquires that had to wait for a load.
    pub misses: u64,
    /// Models unloaded to make room for another.
    pub evictions: u64,
    /// Models unloaded because their keep-alive ran out.
    pub expirations: u64,
    /// Models evicted from the device and parked in host memory.
    pub parks: u64,
    /// Parked models loaded back onto the device.
    pub resumes: u64,
    /// Loads (and reloads) that failed, cancellations included.
    pub failures: u64,
}

/// The whole pool, as it is now.
#[derive(Debug, Clone)]
pub struct PoolSnapshot {
    /// The memory budget, in bytes.
    pub budget: u64,
    /// Bytes charged now (never above `budget`).
    pub charged: u64,
    /// Loads waiting for memory, in queue order (id and version).
    pub queued: Vec<(String, u64)>,
    /// Bytes of unloaded models that leases kept alive past shutdown.
    pub unreclaimed_bytes: u64,
    /// Bytes that models freed and the process keeps for a load waiting
    /// for memory, process-wide (see [`crate::alloc`]; 0 where its
    /// allocator is not installed). Not charged to any model: the load
    /// they are kept for takes them as it allocates.
    pub retained_bytes: u64,
    /// The host tier's budget, in bytes (0: no host tier).
    pub host_budget: u64,
    /// Bytes charged against the host budget now (never above it).
    pub parked: u64,
    /// Every model, by id.
    pub models: Vec<ModelStatus>,
    /// The counters.
    pub counters: PoolCounters,
}

impl PoolSnapshot {
    /// The model `id`, if the pool knows it.
    pub fn model(&self, id: &str) -> Option<&ModelStatus> {
        self.models.iter().find(|m| m.id == id)
    }
}

/// Why a version of a model is being unloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnloadReason {
    /// To make room for a load of another model (its id).
    Evicted {
        /// The model whose load needed the memory.
        for_id: String,
    },
    /// Its keep-alive ran out.
    Expired,
    /// [`ModelPool::unload`](super::ModelPool::unload) or
    /// [`remove`](super::ModelPool::remove) asked for it.
    Unloaded,
    /// A reload's new version replaced it (it drains its leases first).
    Replaced,
    /// The reload could not fit beside it and was told to unload it first.
    MadeRoomForReload,
}

/// What happened to a model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PoolEventKind {
    /// A load (or reload) joined the queue for memory.
    Queued,
    /// It was admitted: charged its estimate, now loading.
    Loading {
        /// Bytes charged (the estimate).
        charged: u64,
    },
    /// It is ready; new leases get this version.
    Ready {
        /// Bytes measured (the charge was trued up to them).
        bytes: u64,
    },
    /// The load failed or was cancelled (for a reload: the old version
    /// keeps serving).
    Failed {
        /// Why.
        error: Error,
    },
    /// It is being unloaded (waiting for its leases, then freeing).
    Unloading {
        /// Why.
        reason: UnloadReason,
    },
    /// Its memory is freed and no longer charged.
    Freed {
        /// Bytes no longer charged.
        bytes: u64,
    },
    /// It is parked (the host tier): its copy in host memory is made (or
    /// was kept from its last park), and the version's device memory is
    /// freed next.
    Parked {
        /// Bytes of host memory the copy holds.
        bytes: u64,
    },
    /// Its copy in host memory is freed: dropped to make room in the host
    /// tier, or the model unloaded, reloaded or removed. (A model loaded
    /// back from its copy keeps it while the tier has room.)
    Unparked {
        /// Bytes no longer charged against the host budget.
        bytes: u64,
    },
}

impl UnloadReason {
    /// Every reason's name, in declaration order: the one table the
    /// bindings translate from.
    pub const NAMES: &'static [&'static str] = &[
        "evicted",
        "expired",
        "unloaded",
        "replaced",
        "madeRoomForReload",
    ];

    /// The reason's name (`"evicted"`, ...), one of [`NAMES`](Self::NAMES).
    pub fn name(&self) -> &'static str {
        match self {
            UnloadReason::Evicted { .. } => "evicted",
            UnloadReason::Expired => "expired",
            UnloadReason::Unloaded => "unloaded",
            UnloadReason::Replaced => "replaced",
            UnloadReason::MadeRoomForReload => "madeRoomForReload",
        }
    }
}

impl PoolEventKind {
    /// Every kind's name, in declaration order: the one table the bindings
    /// translate from.
    pub const NAMES: &'static [&'static str] = &[
        "queued",
        "loading",
        "ready",
        "failed",
        "unloading",
        "freed",
        "parked",
        "unparked",
    ];

    /// The kind's name (`"queued"`, ...), one of [`NAMES`](Self::NAMES).
    pub fn name(&self) -> &'static str {
        match self {
            PoolEventKind::Queued => "queued",
            PoolEventKind::Loading { .. } => "loading",
            PoolEventKind::Ready { .. } => "ready",
            PoolEventKind::Failed { .. } => "failed",
            PoolEventKind::Unloading { .. } => "unloading",
            PoolEventKind::Freed { .. } => "freed",
            PoolEventKind::Parked { .. } => "parked",
            PoolEventKind::Unparked { .. } => "unparked",
        }
    }
}

#[cfg(test)]
mod names {
    use super::*;

    /// `NAMES` lists every variant's `name()`, in declaration order.
    #[test]
    fn the_tables_list_every_variant_once() {
        let reasons = [
            UnloadReason::Evicted { for_id: "b".into() },
            UnloadReason::Expired,
            UnloadReason::Unloaded,
            UnloadReason::Replaced,
            UnloadReason::MadeRoomForReload,
        ];
        let names: Vec<_> = reasons.iter().map(UnloadReason::name).collect();
        assert_eq!(names, UnloadReason::NAMES);
        let kinds = [
            PoolEventKind::Queued,
            PoolEventKind::Loading { charged: 1 },
            PoolEventKind::Ready { bytes: 1 },
            PoolEventKind::Failed {
                error: Error::Cancelled,
            },
            PoolEventKind::Unloading {
                reason: UnloadReason::Expired,
            },
            PoolEventKind::Freed { bytes: 1 },
            PoolEventKind::Parked { bytes: 1 },
            PoolEventKind::Unparked { bytes: 1 },
        ];
        let names: Vec<_> = kinds.iter().map(PoolEventKind::name).collect();
        assert_eq!(names, PoolEventKind::NAMES);
    }
}

/// One event of the pool: in order per model (and across the pool).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolEvent {
    /// The model.
    pub id: String,
    /// The version the event is about.
    pub version: u64,
    /// What happened.
    pub kind: PoolEventKind,
}

/// The counters, kept in `prometheus-client` metrics so that the text
/// exposition and [`PoolCounters`] read the same values.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) loads: Counter,
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) evictions: Counter,
    pub(crate) expirations: Counter,
    pub(crate) parks: Counter,
    pub(crate) resumes: Counter,
    pub(crate) failures: Counter,
    pub(crate) evicted_idle: Histogram,
    pub(crate) queue_wait: Histogram,
    charged: Gauge<u64, AtomicU64>,
    budget: Gauge<u64, AtomicU64>,
    unreclaimed: Gauge<u64, AtomicU64>,
    retained: Gauge<u64, AtomicU64>,
    host_budget: Gauge<u64, AtomicU64>,
    parked: Gauge<u64, AtomicU64>,
    parked_models: Gauge<u64, AtomicU64>,
    resident_models: Gauge<u64, AtomicU64>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("model_manager_pool");
        let metrics = Metrics {
            loads: Counter::default(),
            hits: Counter::default(),
            misses: Counter::default(),
            evictions: Counter::default(),
            expirations: Counter::default(),
            parks: Counter::default(),
            resumes: Counter::default(),
            failures: Counter::default(),
            evicted_idle: Histogram::new(exponential_buckets(0.01, 4.0, 10)),
            queue_wait: Histogram::new(exponential_buckets(0.0001, 4.0, 12)),
            charged: Gauge::default(),
            budget: Gauge::default(),
            unreclaimed: Gauge::default(),
            retained: Gauge::default(),
            host_budget: Gauge::default(),
            parked: Gauge::default(),
            parked_models: Gauge::default(),
            resident_models: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("loads", "Loads started", metrics.loads.clone());
        registry.register(
            "hits",
            "Acquires served by a resident model",
            metrics.hits.clone(),
        );
        registry.register(
            "misses",
            "Acquires that waited for a load",
            metrics.misses.clone(),
        );
        registry.register(
            "evictions",
            "Models unloaded to make room",
            metrics.evictions.clone(),
        );
        registry.register(
            "expirations",
            "Models unloaded when their keep-alive ran out",
            metrics.expirations.clone(),
        );
        registry.register(
            "parks",
            "Models evicted from the device and parked in host memory",
            metrics.parks.clone(),
        );
        registry.register(
            "resumes",
            "Parked models loaded back onto the device",
            metrics.resumes.clone(),
        );
        registry.register(
            "failures",
            "Loads that failed or were cancelled",
            metrics.failures.clone(),
        );
        registry.register(
            "evicted_idle_seconds",
            "How long an evicted model had been idle",
            metrics.evicted_idle.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "How long a load waited for memory",
            metrics.queue_wait.clone(),
        );
        registry.register(
            "charged_bytes",
            "Bytes charged against the budget",
            metrics.charged.clone(),
        );
        registry.register("budget_bytes", "The memory budget", metrics.budget.clone());
        registry.register(
            "unreclaimed_bytes",
            "Bytes of unloaded models kept alive by leases past shutdown",
            metrics.unreclaimed.clone(),
        );
        registry.register(
            "retained_bytes",
            "Bytes models freed, kept for a load waiting for memory (process-wide)",
            metrics.retained.clone(),
        );
        registry.register(
            "host_budget_bytes",
            "The host tier's budget (0: none)",
            metrics.host_budget.clone(),
        );
        registry.register(
            "parked_bytes",
            "Bytes charged against the host budget",
            metrics.parked.clone(),
        );
        registry.register(
            "parked_models",
            "Models parked in host memory",
            metrics.parked_models.clone(),
        );
        registry.register(
            "resident_models",
            "Models with a version serving leases",
            metrics.resident_models.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub(crate) fn counters(&self) -> PoolCounters {
        PoolCounters {
            loads: self.loads.get(),
            hits: self.hits.get(),
            misses: self.misses.get(),
            evictions: self.evictions.get(),
            expirations: self.expirations.get(),
            parks: self.parks.get(),
            resumes: self.resumes.get(),
            failures: self.failures.get(),
        }
    }

    /// The text exposition, with the gauges set from `snapshot`.
    pub(crate) fn text(&self, snapshot: &PoolSnapshot) -> String {
        self.charged.set(snapshot.charged);
        self.budget.set(snapshot.budget);
        self.unreclaimed.set(snapshot.unreclaimed_bytes);
        self.retained.set(snapshot.retained_bytes);
        self.host_budget.set(snapshot.host_budget);
        self.parked.set(snapshot.parked);
        self.parked_models
            .set(snapshot.models.iter().filter(|m| m.parked).count() as u64);
        self.resident_models.set(
            snapshot
                .models
                .iter()
                .filter(|m| m.version.is_some())
                .count() as u64,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
