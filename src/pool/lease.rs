//! [`PoolLease`]: a lease on one version of a pooled model.

use std::ops::Deref;
use std::sync::Arc;

use crate::io::loaded::{PipelineInfo, TensorPipeline};
use crate::pipeline::{Lease, Pipeline};

/// Told when a pool lease is released (the pool's core): the model's
/// keep-alive clock and the loads waiting for memory look again.
pub(crate) trait Releases: Send + Sync {
    fn released(&self, id: &str, version: u64);
    /// The working memory reserved under `number` for a lease on `id` is
    /// no longer needed.
    fn release_working(&self, id: &str, number: u64);
}

/// A lease on a model of a [`ModelPool`](super::ModelPool): the version it
/// was taken on stays loaded (and is never evicted) until the lease is
/// dropped. Derefs to the pipeline.
///
/// Dropping it releases the lease: the model's keep-alive clock starts when
/// its last lease goes, and loads waiting for memory look again.
pub struct PoolLease<P: Pipeline = TensorPipeline> {
    lease: Option<Lease<P>>,
    core: Arc<dyn Releases>,
    id: Arc<str>,
    version: u64,
    /// Working memory reserved for the lease: its reservation's number
    /// and bytes.
    working: Option<(u64, u64)>,
}

impl<P: Pipeline> PoolLease<P> {
    pub(crate) fn new(
        lease: Lease<P>,
        core: Arc<dyn Releases>,
        id: Arc<str>,
        version: u64,
    ) -> Self {
        PoolLease {
            lease: Some(lease),
            core,
            id,
            version,
            working: None,
        }
    }

    /// The lease now holds working memory reserved under `number`.
    pub(crate) fn hold_working(&mut self, number: u64, bytes: u64) {
        self.working = Some((number, bytes));
    }

    /// The working memory reserved for this lease
    /// ([`ModelPool::acquire_with`](super::ModelPool::acquire_with)),
    /// charged against the budget until the lease is dropped.
    pub fn working_bytes(&self) -> u64 {
        self.working.map_or(0, |(_, bytes)| bytes)
    }

    fn lease(&self) -> &Lease<P> {
        // Taken only in `drop`.
        self.lease
            .as_ref()
            .expect("a pool lease holds its lease until dropped")
    }

    /// The model's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The version this lease holds (reloads make new versions; a lease
    /// keeps the one it was taken on).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The pipeline's config facts.
    pub fn info(&self) -> &PipelineInfo {
        self.lease().info()
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &P {
        self.lease().pipeline()
    }
}

impl<P: Pipeline> Deref for PoolLease<P> {
    type Target = P;

    fn deref(&self) -> &P {
        self.pipeline()
    }
}

impl<P: Pipeline> std::fmt::Debug for PoolLease<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolLease")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl<P: Pipeline> Drop for PoolLease<P> {
    fn drop(&mut self) {
        // Release the manager's lease first, so that the pool sees the
        // count it leaves.
        drop(self.lease.take());
        if let Some((number, _)) = self.working.take() {
            self.core.release_working(&self.id, number);
        }
        self.core.released(&self.id, self.version);
    }
}

#[allow(dead_code)]
fn _assert_pool_lease_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<PoolLease<TensorPipeline>>();
}
