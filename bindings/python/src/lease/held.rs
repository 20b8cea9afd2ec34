//! What a lease holds (a manager's lease or a pool's), the cell its
//! `Tensor` objects share until it is released, and the lookups by name.

use std::sync::{Arc, Mutex, PoisonError};

use model_manager::candle_core::Tensor as CandleTensor;
use model_manager::{Component, Lease as CoreLease, PoolLease, TensorPipeline};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;

/// What a lease holds: a manager's lease or a pool's.
pub enum Held {
    Manager(CoreLease),
    Pool(PoolLease),
}

impl Held {
    pub(crate) fn pipeline(&self) -> &TensorPipeline {
        match self {
            Held::Manager(lease) => lease.pipeline(),
            Held::Pool(lease) => lease.pipeline(),
        }
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
