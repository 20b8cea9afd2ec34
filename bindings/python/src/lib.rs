//! `model_manager._model_manager`: the Python binding of model-manager, a
//! thin translation of the core. The `model_manager` package around it
//! (Python) adds asyncio, context managers and typed values; every
//! lifecycle decision is the core's.

/// Large blocks an evicted model frees serve the next load in a pool
/// (`model_manager::alloc`).
#[cfg(not(miri))]
#[global_allocator]
static ALLOC: model_manager::alloc::Allocator = model_manager::alloc::Allocator::new();

mod convert;
mod errors;
mod events;
mod lease;
mod manager;
mod pool;
mod rt;

use model_manager::{Command, ErrorCode, PoolEventKind, State, UnloadReason};
use pyo3::prelude::*;

#[pymodule]
fn _model_manager(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The core's tables: the package builds its enums and exceptions from
    // these, never from names of its own.
    let codes: Vec<(&str, u32)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.name(), *c as u32))
        .collect();
    m.add("ERROR_CODES", codes)?;
    m.add(
        "STATES",
        State::ALL.iter().map(|s| s.name()).collect::<Vec<_>>(),
    )?;
    m.add(
        "COMMANDS",
        Command::ALL.iter().map(|c| c.name()).collect::<Vec<_>>(),
    )?;
    m.add("POOL_EVENT_KINDS", PoolEventKind::NAMES.to_vec())?;
    m.add("UNLOAD_REASONS", UnloadReason::NAMES.to_vec())?;
    m.add(
        "ModelManagerError",
        py.get_type::<errors::ModelManagerError>(),
    )?;
    m.add("ERRORS", errors::build_classes(py)?)?;
    m.add("DEFAULT_CHUNK_SIZE", model_manager::DEFAULT_CHUNK_SIZE)?;
    m.add_class::<manager::Manager>()?;
    m.add_class::<pool::Pool>()?;
    m.add_class::<rt::Pending>()?;
    m.add_class::<lease::Lease>()?;
    m.add_class::<lease::Tensor>()?;
    m.add_class::<events::Events>()?;
    m.add_class::<convert::Hub>()?;
    m.add_function(wrap_pyfunction!(rt::quiesce, m)?)?;
    Ok(())
}
