//! The CUDA path's pinned (page-locked) staging buffers, pooled for a
//! manager's life: a load's threads read chunks into them and copy from
//! them to the device.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::cuda_backend::cudarc::driver::{
    CudaContext, CudaEvent, DriverError, PinnedHostSlice,
};

use crate::error::{Error, Result};

pub(crate) fn driver(e: DriverError) -> Error {
    Error::Device(format!("CUDA: {e}"))
}

/// Freed when the manager is dropped.
#[derive(Default)]
pub(crate) struct StagingPool {
    free: Mutex<Vec<PinnedHostSlice<u8>>>,
}

impl StagingPool {
    /// A buffer of at least `bytes` (the chunk size is fixed per manager;
    /// a smaller buffer left in the pool is freed).
    fn take(&self, context: &Arc<CudaContext>, bytes: usize) -> Result<PinnedHostSlice<u8>> {
        loop {
            let popped = self
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match popped {
                Some(buffer) if buffer.len() >= bytes => return Ok(buffer),
                Some(_) => continue,
                // Plain page-locked memory (not write-combined: the kernel's
                // copy from the page cache writes it through the CPU caches).
                // SAFETY: the memory is uninitialised; it is only read by
                // copies of the bytes a read has just written into it.
                None => {
                    return unsafe { context.alloc_pinned_with_flags::<u8>(bytes, 0) }
                        .map_err(driver)
                }
            }
        }
    }

    fn give(&self, buffer: PinnedHostSlice<u8>) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(buffer);
    }
}

/// A staging buffer on loan from the pool, and the event recorded after the
/// copies out of it; dropping it waits for those copies, then returns the
/// buffer to the pool.
pub(crate) struct Staging<'p> {
    pub(crate) buffer: Option<PinnedHostSlice<u8>>,
    pub(crate) copied: CudaEvent,
    pool: &'p StagingPool,
}

impl<'p> Staging<'p> {
    pub(crate) fn new(
        pool: &'p StagingPool,
        context: &Arc<CudaContext>,
        bytes: usize,
    ) -> Result<Self> {
        let buffer = pool.take(context, bytes)?;
        let copied = context.new_event(None).map_err(driver)?;
        Ok(Staging {
            buffer: Some(buffer),
            copied,
            pool,
        })
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        // The copies queued from this buffer must finish before it is reused
        // or freed; if waiting fails, the buffer is leaked rather than
        // handed out (or freed) under a copy that may still read it.
        match self.copied.synchronize() {
            Ok(()) => {
                if let Some(buffer) = self.buffer.take() {
                    self.pool.give(buffer);
                }
            }
            Err(e) => {
                tracing::warn!("CUDA: waiting for staging copies failed: {e}");
                std::mem::forget(self.buffer.take());
            }
        }
    }
}
