//! PipelineManager: storage of the loaded pipeline and its config, and leases.
//!
//! The built-in [`TensorPipeline`] holds named candle-core tensors per
//! component plus the parsed configs. A Rust application can load straight
//! into its own model type by implementing [`Pipeline`]:
//!
//! ```
//! use candle_core::Tensor;
//! use model_manager::{Error, Pipeline, TensorPipeline};
//!
//! struct Linear { weight: Tensor }
//!
//! impl Pipeline for Linear {
//!     fn assemble(loaded: TensorPipeline) -> Result<Self, Error> {
//!         let weight = loaded
//!             .tensor("weight")
//!             .cloned()
//!             .ok_or_else(|| Error::Assemble("no tensor named weight".into()))?;
//!         Ok(Linear { weight })
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use candle_core::Tensor;
use serde_json::Value;
use tokio::sync::watch;

use crate::resource::Reservation;
use crate::{Error, Result};

/// What a manager hands out under a lease: built from the loaded tensors.
pub trait Pipeline: Sized + Send + Sync + 'static {
    /// Build the pipeline from the tensors and configs just loaded. Runs on a
    /// blocking thread, never on the async runtime; an error ends the load in
    /// `Failed` with [`Error::Assemble`] or the error returned.
    fn assemble(loaded: TensorPipeline) -> Result<Self>;
}

impl Pipeline for TensorPipeline {
    fn assemble(loaded: TensorPipeline) -> Result<Self> {
        Ok(loaded)
    }
}

/// One component of a pipeline (the whole model, for a single-model source).
#[derive(Debug, Clone)]
pub struct Component {
    pub(crate) name: String,
    pub(crate) config: Option<Value>,
    pub(crate) tensors: BTreeMap<String, Tensor>,
}

impl Component {
    /// The component's name (`"model"` for a single-model source, else the
    /// subfolder name such as `"unet"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component's parsed `config.json`, if it has one.
    pub fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Named candle-core tensors per component, plus the parsed configs.
#[derive(Debug, Clone)]
pub struct TensorPipeline {
    pub(crate) components: Vec<Component>,
    pub(crate) info: PipelineInfo,
}

impl TensorPipeline {
    /// The components, in load order.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// A component by name.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// A tensor by name: `"name"` searches every component in order,
    /// `"component/name"` one component.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        if let Some((component, rest)) = name.split_once('/') {
            if let Some(t) = self.component(component).and_then(|c| c.tensor(rest)) {
                return Some(t);
            }
        }
        self.components.iter().find_map(|c| c.tensor(name))
    }

    /// Every tensor as `(component, name, tensor)`.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &str, &Tensor)> {
        self.components
            .iter()
            .flat_map(|c| c.tensors().map(move |(n, t)| (c.name(), n, t)))
    }

    /// Number of tensors in all components.
    pub fn tensor_count(&self) -> usize {
        self.components.iter().map(|c| c.tensors.len()).sum()
    }

    /// The pipeline's config facts.
    pub fn info(&self) -> &PipelineInfo {
        &self.info
    }
}

/// Config facts of a loaded pipeline, kept beside it whatever its type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineInfo {
    /// The denoiser's `sample_size` (or the model's), when its config has one.
    pub sample_size: Option<u64>,
    /// The top-level config (`config.json` or `model_index.json`).
    pub config: Option<Value>,
    /// Bytes of tensor data.
    pub bytes: u64,
    /// Number of tensors.
    pub tensors: u64,
}

/// A loaded pipeline with its config and the memory it holds.
pub(crate) struct Resident<P> {
    // Field order is drop order: the pipeline's buffers go before the
    // reservation that counts them.
    pipeline: P,
    info: PipelineInfo,
    reservation: Reservation,
}

impl<P> Resident<P> {
    pub(crate) fn new(pipeline: P, info: PipelineInfo, reservation: Reservation) -> Self {
        Resident {
            pipeline,
            info,
            reservation,
        }
    }

    /// The manager gives up on this pipeline while something still holds it:
    /// its bytes count as unreclaimed until it is dropped.
    pub(crate) fn abandon(&self) {
        self.reservation.abandon();
    }
}

/// Counts the leases of one resident pipeline.
#[derive(Debug)]
pub(crate) struct LeaseCount {
    count: watch::Sender<usize>,
}

impl LeaseCount {
    fn new() -> Arc<Self> {
        Arc::new(LeaseCount {
            count: watch::Sender::new(0),
        })
    }

    pub(crate) fn outstanding(&self) -> usize {
        *self.count.borrow()
    }

    /// Wait until no lease is held. Cancel safe.
    pub(crate) async fn drained(&self) {
        let mut rx = self.count.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = rx.wait_for(|&n| n == 0).await;
    }
}

/// A resident pipeline and the count of its leases: what the published
/// snapshot holds in `Ready`, and what an unload retires.
pub(crate) struct Installed<P> {
    pub(crate) resident: Arc<Resident<P>>,
    pub(crate) leases: Arc<LeaseCount>,
    /// The config facts, shared with the published snapshot.
    pub(crate) info: Arc<PipelineInfo>,
}

impl<P: Pipeline> Installed<P> {
    pub(crate) fn new(resident: Resident<P>) -> Self {
        Installed {
            info: Arc::new(resident.info.clone()),
            resident: Arc::new(resident),
            leases: LeaseCount::new(),
        }
    }

    /// A lease. Callers take it under the state lock, so that an unload,
    /// which retires the pipeline under the same lock, counts it.
    pub(crate) fn lease(&self) -> Lease<P> {
        self.leases.count.send_modify(|n| *n += 1);
        Lease {
            resident: Some(self.resident.clone()),
            leases: self.leases.clone(),
        }
    }
}

/// PipelineManager: builds the user's pipeline from what was loaded (the
/// pipeline itself, its leases and their count live in [`Installed`], held
/// by the state's core while `Ready`).
pub(crate) struct PipelineManager;

impl PipelineManager {
    pub(crate) fn new() -> Self {
        PipelineManager
    }

    /// Build the user's pipeline from what was loaded; a panic in the user's
    /// `assemble` is an error, not a crash.
    pub(crate) fn assemble<P: Pipeline>(
        &self,
        loaded: TensorPipeline,
        reservation: Reservation,
    ) -> Result<Resident<P>> {
        let info = loaded.info.clone();
        let pipeline = catch_unwind(AssertUnwindSafe(|| P::assemble(loaded)))
            .unwrap_or_else(|_| Err(Error::Assemble("the pipeline's assemble panicked".into())))?;
        Ok(Resident::new(pipeline, info, reservation))
    }
}

/// A guard that keeps the loaded pipeline alive and usable.
///
/// While any lease is held, an unload waits in `Unloading`; dropping the last
/// lease lets it free the memory. A lease never sees a freed pipeline.
///
/// ```no_run
/// # async fn f(manager: &model_manager::ModelManager) -> Result<(), model_manager::Error> {
/// let lease = manager.acquire()?;
/// let weight = lease.tensor("weight").expect("the model has a weight");
/// println!("{:?}", weight.shape());
/// drop(lease); // lets a pending unload finish
/// # Ok(()) }
/// ```
pub struct Lease<P = TensorPipeline> {
    resident: Option<Arc<Resident<P>>>,
    leases: Arc<LeaseCount>,
}

impl<P> Lease<P> {
    fn resident(&self) -> &Resident<P> {
        self.resident
            .as_ref()
            .expect("a lease holds its pipeline until dropped")
    }

    /// The pipeline's config facts.
    pub fn info(&self) -> &PipelineInfo {
        &self.resident().info
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &P {
        &self.resident().pipeline
    }
}

impl<P> Deref for Lease<P> {
    type Target = P;

    fn deref(&self) -> &P {
        self.pipeline()
    }
}

impl<P> std::fmt::Debug for Lease<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("info", &self.resident().info)
            .finish_non_exhaustive()
    }
}

impl<P> Drop for Lease<P> {
    fn drop(&mut self) {
        // Let go of the pipeline before counting the lease as released, so an
        // unload that sees zero leases holds the only reference.
        drop(self.resident.take());
        self.leases.count.send_modify(|n| *n -= 1);
    }
}

#[allow(dead_code)]
fn _assert_lease_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Lease<TensorPipeline>>();
}
