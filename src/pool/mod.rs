//! [`ModelPool`]: several models under one memory budget, each with the
//! lifecycle a [`ModelManager`](crate::manager::ModelManager) has (each loaded
//! version *is* a manager of its own), with size-aware eviction,
//! keep-alive, pinning, loads on demand and zero-downtime reloads.
//!
//! ```no_run
//! use std::time::Duration;
//! use model_manager::ModelPool;
//!
//! # #[tokio::main] async fn main() -> Result<(), model_manager::Error> {
//! let pool = ModelPool::builder()
//!     .memory_budget(8 << 30)
//!     .keep_alive(Some(Duration::from_secs(300)))
//!     .build()?;
//! pool.add("encoder", "models/encoder")?;
//! pool.add("denoiser", "models/denoiser")?;
//! {
//!     let lease = pool.acquire("encoder").await?;   // loads on demand
//!     println!("{} tensors", lease.tensor_count());
//! }                                                  // its keep-alive starts
//! let new_version = pool.reload("encoder", "models/encoder-v2").await?;
//! println!("serving version {new_version}");
//! print!("{}", pool.metrics_text());
//! pool.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Semantics
//!
//! - **Ledger.** A load is charged its estimate (the headers' bytes plus
//!   the conversion peak) from the moment it is admitted until its memory
//!   is freed after its unload; the charge is trued up to the measured
//!   bytes at `Ready`. The charges never exceed the budget, at any instant;
//!   each version's manager is itself limited to its charge.
//! - **Admission**, first come first served (one load at a time by
//!   default): a load fits when the charges plus its estimate stay within
//!   the budget. Otherwise models are evicted — `Ready`, unleased,
//!   unpinned ones only: keep-alive-expired first, then the least recently
//!   used one that alone covers the shortfall, then least recently used
//!   first; all or nothing; ties by id. If that cannot make room while
//!   models are leased or loading, the load waits (woken by lease releases
//!   and frees, never by polling) up to the pool's admission timeout, then
//!   fails with [`Error::MemoryBusy`] naming what blocked it. If it could
//!   not fit even with every unpinned model gone, it fails at once with
//!   [`Error::InsufficientMemory`] (saying what pinned models hold).
//! - **Acquire** leases the serving version (and marks the model used);
//!   joins a load in flight; loads a model that is not resident; answers
//!   the last error during the retry cooldown after a failure. A model is
//!   never loaded twice at once (a new load of it waits until a stopped
//!   one has freed what it read). A model with a lease on any of its
//!   versions, or a caller waiting to lease it, is in use: not evicted,
//!   its keep-alive stopped.
//! - **Keep-alive**: a model's clock starts when its last lease is
//!   released and never runs while one is held; an acquire stops it.
//!   Forever (the default) still allows eviction under memory pressure;
//!   only [`pin`](ModelPool::pin) prevents it.
//! - **Reload** loads the new version beside the old one; leases keep the
//!   version they hold, new leases get the new one once it is ready, and
//!   the old one drains and is freed. A failed reload leaves the old
//!   version serving (its error is in the model's status); the newest
//!   reload wins. If both versions cannot fit, [`ReloadPolicy`] decides.

mod api;
mod builder;
mod core;
pub(crate) mod evict;
pub(crate) mod keep_alive;
mod lease;
pub(crate) mod ledger;
mod options;
mod rt;
mod status;
pub(crate) mod tier;

pub use api::ModelPool;
pub use builder::ModelPoolBuilder;
pub use lease::PoolLease;
pub use options::{ModelOptions, ReloadPolicy};
pub use status::{ModelStatus, PoolCounters, PoolEvent, PoolEventKind, PoolSnapshot, UnloadReason};
