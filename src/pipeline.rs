//! The pipeline: what a manager hands out under a lease. [`Pipeline`] (the
//! application's model type, built from what was read), the
//! [`PipelineManager`] that assembles it, and the resident pipeline with
//! its leases ([`Installed`], [`Lease`]), which the state's store holds
//! while `Ready`.
//!
//! May import: `io` (what a read produces), `resource`, `error`.
//!
//! The built-in [`TensorPipeline`] holds named candle-core tensors per
//! component plus the parsed configs. A Rust application loads straight into
//! its own model type by implementing [`Pipeline`]; `assemble` gets what was
//! loaded and an [`Assembly`]: the device, the target dtype and the
//! application's options for this pipeline type.
//!
//! ```
//! use candle_core::Tensor;
//! use model_manager::{Assembly, Error, Pipeline, TensorPipeline};
//!
//! struct Linear { weight: Tensor, scale: f64 }
//!
//! impl Pipeline for Linear {
//!     /// The scale applied to the output, chosen by the application.
//!     type Options = f64;
//!
//!     fn assemble(loaded: TensorPipeline, cx: &Assembly<'_, f64>) -> Result<Self, Error> {
//!         let weight = loaded
//!             .tensor("weight")
//!             .cloned()
//!             .ok_or_else(|| Error::Assemble("no tensor named weight".into()))?;
//!         Ok(Linear { weight, scale: *cx.options() })
//!     }
//! }
//!
//! let manager = model_manager::ModelManager::builder()
//!     .pipeline_with::<Linear>(0.5)
//!     .build()?;
//! # Ok::<(), Error>(())
//! ```
//!
//! A candle model is built the same way, through `candle-nn`'s `VarBuilder`
//! over a component's tensors (no copy: the model holds the loaded buffers,
//! which the manager counts and frees on unload). With `candle-nn` and
//! `candle-transformers` as dependencies:
//!
//! ```ignore
//! use candle_nn::VarBuilder;
//! use candle_transformers::models::bert::{BertModel, Config};
//!
//! struct Bert(BertModel);
//!
//! impl Pipeline for Bert {
//!     type Options = ();
//!
//!     fn assemble(loaded: TensorPipeline, cx: &Assembly<'_, ()>) -> model_manager::Result<Self> {
//!         let model = loaded.component("model").ok_or_else(|| Error::Assemble("no model".into()))?;
//!         let config: Config = serde_json::from_value(model.config().cloned().unwrap_or_default())
//!             .map_err(|e| Error::Assemble(format!("config.json: {e}")))?;
//!         let dtype = model.float_dtype().unwrap_or(candle_core::DType::F32);
//!         let vb = VarBuilder::from_tensors(model.tensor_map(), dtype, cx.device());
//!         Ok(Bert(BertModel::load(vb, &config).map_err(|e| Error::Assemble(e.to_string()))?))
//!     }
//! }
//! ```
//!
//! `examples/embed/` runs this end to end.

use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use candle_core::{DType, Device};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::io::loaded::{PipelineInfo, TensorPipeline};
use crate::resource::Reservation;

/// What a manager hands out under a lease: built from the loaded tensors.
pub trait Pipeline: Sized + Send + Sync + 'static {
    /// What the application gives every `assemble` of this type (a model's
    /// settings, a tokenizer, ...): set with
    /// [`ModelManagerBuilder::pipeline_with`](crate::ModelManagerBuilder::pipeline_with);
    /// `()` for none.
    type Options: Send + Sync + 'static;

    /// Build the pipeline from the tensors and configs just loaded. Runs on a
    /// blocking thread, never on the async runtime; an error (or a panic)
    /// ends the load in `Failed` with the error returned (or
    /// [`Error::Assemble`]), and what was loaded is freed.
    fn assemble(loaded: TensorPipeline, cx: &Assembly<'_, Self::Options>) -> Result<Self>;

    /// The tensors this pipeline was assembled from, if it keeps them. A
    /// pool with a host tier ([`ModelPoolBuilder::host_budget`](crate::ModelPoolBuilder::host_budget))
    /// parks a model evicted from the device by copying them to host
    /// memory, and assembles the pipeline again from that copy when the
    /// model is wanted. `None` (the default): an evicted model is freed.
    fn loaded(&self) -> Option<&TensorPipeline> {
        None
    }
}

impl Pipeline for TensorPipeline {
    type Options = ();

    fn assemble(loaded: TensorPipeline, _: &Assembly<'_, ()>) -> Result<Self> {
        Ok(loaded)
    }

    fn loaded(&self) -> Option<&TensorPipeline> {
        Some(self)
    }
}

/// What [`Pipeline::assemble`] is given beside the loaded tensors.
#[derive(Debug)]
pub struct Assembly<'a, O> {
    device: &'a Device,
    dtype: Option<DType>,
    options: &'a O,
}

impl<'a, O> Assembly<'a, O> {
    /// The device the tensors were loaded onto.
    pub fn device(&self) -> &'a Device {
        self.device
    }

    /// The dtype floating-point tensors were converted to, if the manager
    /// was built with one ([`ModelManagerBuilder::dtype`](crate::ModelManagerBuilder::dtype)).
    pub fn dtype(&self) -> Option<DType> {
        self.dtype
    }

    /// The application's options for this pipeline type.
    pub fn options(&self) -> &'a O {
        self.options
    }
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
    /// The manager's count of lease releases, bumped by every release.
    released: Arc<watch::Sender<u64>>,
}

impl LeaseCount {
    fn new(released: Arc<watch::Sender<u64>>) -> Arc<Self> {
        Arc::new(LeaseCount {
            count: watch::Sender::new(0),
            released,
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
    /// `released`: the manager's count of lease releases.
    pub(crate) fn new(resident: Resident<P>, released: Arc<watch::Sender<u64>>) -> Self {
        Installed {
            info: Arc::new(resident.info.clone()),
            resident: Arc::new(resident),
            leases: LeaseCount::new(released),
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

/// PipelineManager: builds the user's pipeline from what was loaded, with
/// the application's options for it (the pipeline itself, its leases and
/// their count live in [`Installed`], held by the state's core while
/// `Ready`).
pub(crate) struct PipelineManager<P: Pipeline> {
    /// Shared by every manager of a pool.
    options: Arc<P::Options>,
}

impl<P: Pipeline> PipelineManager<P> {
    pub(crate) fn new(options: Arc<P::Options>) -> Self {
        PipelineManager { options }
    }

    /// Build the user's pipeline from what was loaded; a panic in the user's
    /// `assemble` is an error, not a crash.
    pub(crate) fn assemble(
        &self,
        loaded: TensorPipeline,
        device: &Device,
        dtype: Option<DType>,
        reservation: Reservation,
    ) -> Result<Resident<P>> {
        let info = loaded.info.clone();
        let cx = Assembly {
            device,
            dtype,
            options: self.options.as_ref(),
        };
        let pipeline = catch_unwind(AssertUnwindSafe(|| P::assemble(loaded, &cx)))
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
        self.leases.released.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[allow(dead_code)]
fn _assert_lease_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Lease<TensorPipeline>>();
}
