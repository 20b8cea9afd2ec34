//! What a lease holds (a manager's lease or a pool's), the cell its
//! `Tensor` objects share until it is released, and the lookups by name.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use model_manager::candle_core::Tensor as CandleTensor;
use model_manager::{Component, Lease as CoreLease, PoolLease, TensorPipeline};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;

/// What a lease holds: a manager's lease or a pool's, and whether its
/// device memory was exported.
pub struct Held {
    /// Taken by `Drop` only.
    pub(crate) lease: ManuallyDrop<HeldLease>,
    /// A tensor in device memory was exported: the device is synchronized
    /// before the lease lets its memory go (see `Drop`).
    pub(super) device_exported: AtomicBool,
}

pub enum HeldLease {
    Manager(CoreLease),
    Pool(PoolLease),
}

impl Held {
    pub(crate) fn manager(lease: CoreLease) -> Held {
        Held::new(HeldLease::Manager(lease))
    }

    pub(crate) fn pool(lease: PoolLease) -> Held {
        Held::new(HeldLease::Pool(lease))
    }

    fn new(lease: HeldLease) -> Held {
        Held {
            lease: ManuallyDrop::new(lease),
            device_exported: AtomicBool::new(false),
        }
    }

    pub(crate) fn pipeline(&self) -> &TensorPipeline {
        self.lease.pipeline()
    }
}

impl HeldLease {
    fn pipeline(&self) -> &TensorPipeline {
        match self {
            HeldLease::Manager(lease) => lease.pipeline(),
            HeldLease::Pool(lease) => lease.pipeline(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and never used after.
        let lease = unsafe { ManuallyDrop::take(&mut self.lease) };
        if !self.device_exported.load(Ordering::SeqCst) {
            return;
        }
        // Exported device memory may still be read by kernels queued on the
        // consumer's streams (torch's), which the manager knows nothing of:
        // the device finishes them before the lease lets the memory go.
        // Once per lease, and off this thread, which may hold the GIL (a
        // torch tensor's deleter, `release()`): the wait may be long.
        crate::rt::runtime().spawn_blocking(move || {
            if let Some((_, _, t)) = lease.pipeline().tensors().next() {
                super::dlpack::synchronize(t.device());
            }
            drop(lease);
        });
    }
}

/// The lease, until released; shared with the lease's `Tensor` objects.
pub(super) struct Cell {
    pub(super) held: Mutex<Option<Arc<Held>>>,
}

impl Cell {
    pub(super) fn get(&self) -> PyResult<Arc<Held>> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| PyValueError::new_err("the lease has been released"))
    }
}

pub(super) fn component<'a>(held: &'a Held, name: &str) -> PyResult<&'a Component> {
    held.pipeline().component(name).ok_or_else(|| {
        let names: Vec<&str> = held
            .pipeline()
            .components()
            .iter()
            .map(Component::name)
            .collect();
        PyKeyError::new_err(format!("no component {name:?} (components: {names:?})"))
    })
}

pub(super) fn tensor<'a>(held: &'a Held, comp: &str, name: &str) -> PyResult<&'a CandleTensor> {
    component(held, comp)?
        .tensor(name)
        .ok_or_else(|| PyKeyError::new_err(format!("no tensor {name:?} in component {comp:?}")))
}
