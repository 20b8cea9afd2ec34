//! A model parked in host memory by a pool's host tier: its tensors copied
//! out of device memory (into one page-locked buffer on CUDA), and copied
//! back to the device when it is wanted again, with no file read, no parse
//! and no dtype conversion.
//!
//! On the CPU a model is in host memory already and the host tier does not
//! apply; a pool built to simulate it (for tests) parks a CPU model by
//! copying its tensors, which exercises every decision of the tier and
//! saves no memory.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use candle_core::{DType, Shape, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::loaded::{PipelineInfo, TensorPipeline};

/// A model parked in host memory by a [`ModelPool`](crate::ModelPool)'s
/// host tier (see [`ModelPoolBuilder::host_budget`](crate::ModelPoolBuilder::host_budget)).
/// Only a pool makes one: its acquire loads it back onto the device as the
/// source of the model's next version.
pub struct ParkedModel {
    bytes: u64,
    tensors: u64,
    /// `None` once freed: the pool frees a copy when it drops it, whoever
    /// still holds the `ParkedModel` (the state of a manager that loaded
    /// it keeps its source).
    contents: Mutex<Option<Contents>>,
    /// Freed while a resume was reading it: the resume frees it when done.
    freed: AtomicBool,
}

/// What a parked model holds, for the resume that reads it.
pub(crate) struct Contents {
    pub(crate) components: Vec<ParkedComponent>,
    pub(crate) info: PipelineInfo,
    #[cfg(feature = "cuda")]
    pub(crate) pinned: Option<candle_core::cuda_backend::cudarc::driver::PinnedHostSlice<u8>>,
}

pub(crate) struct ParkedComponent {
    pub(crate) name: String,
    pub(crate) config: Option<Value>,
    pub(crate) tensors: Vec<(String, ParkedTensor)>,
}

pub(crate) struct ParkedTensor {
    pub(crate) dtype: DType,
    pub(crate) shape: Shape,
    pub(crate) held: Held,
}

pub(crate) enum Held {
    /// A copy in host memory (the CPU's simulated tier).
    Copy(Tensor),
    /// Bytes `offset..offset + len` of the pinned buffer.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Pinned { offset: usize, len: usize },
}

impl fmt::Debug for ParkedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParkedModel")
            .field("bytes", &self.bytes)
            .field("tensors", &self.tensors)
            .field("freed", &self.freed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl ParkedModel {
    /// Bytes of host memory the parked tensors hold.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Tensors parked.
    pub fn tensor_count(&self) -> u64 {
        self.tensors
    }

    fn new(contents: Contents, bytes: u64) -> ParkedModel {
        ParkedModel {
            bytes,
            tensors: contents.info.tensors,
            contents: Mutex::new(Some(contents)),
            freed: AtomicBool::new(false),
        }
    }

    /// Free the copy now. A resume reading it frees it when it is done
    /// (and one starting later finds nothing to read).
    pub(crate) fn free(&self) {
        self.freed.store(true, Ordering::SeqCst);
        match self.contents.try_lock() {
            Ok(mut contents) => drop(contents.take()),
            // A read that panicked: the copy goes all the same.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                drop(poisoned.into_inner().take());
            }
            // Being read: the read frees it when it is done.
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
    }
}

/// The bytes of a tensor's elements.
pub(crate) fn len_of(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// Bytes of host memory `pipeline`'s copy will take: its tensors, each at
/// an aligned offset in one buffer on CUDA (the tier charges this before
/// the copy is made, so that it never drops other copies for a copy that
/// then does not fit).
pub(crate) fn parked_bytes(pipeline: &TensorPipeline) -> u64 {
    let tensors = pipeline.components.iter().flat_map(|c| c.tensors.values());
    let mut total = 0u64;
    for t in tensors {
        let len = len_of(t) as u64;
        total = match t.device() {
            candle_core::Device::Cpu => total.saturating_add(len),
            _ => total.next_multiple_of(ALIGN as u64).saturating_add(len),
        };
    }
    total
}

/// Where each tensor starts in a CUDA copy's buffer: 256-byte aligned.
const ALIGN: usize = 256;

/// Copy `pipeline`'s tensors to host memory (see the module docs). The
/// tensors stay valid: the caller frees them afterwards, by unloading.
pub(crate) fn park(pipeline: &TensorPipeline) -> Result<ParkedModel> {
    let tensors = || pipeline.components.iter().flat_map(|c| c.tensors.values());
    if tensors().all(|t| t.device().is_cpu()) {
        let components = gather(pipeline, |t| Ok(Held::Copy(t.copy()?)))?;
        let contents = Contents {
            components,
            info: pipeline.info.clone(),
            #[cfg(feature = "cuda")]
            pinned: None,
        };
        return Ok(ParkedModel::new(
            contents,
            tensors().map(|t| len_of(t) as u64).sum(),
        ));
    }
    #[cfg(feature = "cuda")]
    {
        cuda::park(pipeline)
    }
    #[cfg(not(feature = "cuda"))]
    Err(Error::Device(
        "the host tier parks CUDA models only".to_owned(),
    ))
}

/// The parked model's layout, each tensor's `Held` made by `hold`, in
/// order.
fn gather(
    pipeline: &TensorPipeline,
    mut hold: impl FnMut(&Tensor) -> Result<Held>,
) -> Result<Vec<ParkedComponent>> {
    let mut components = Vec::with_capacity(pipeline.components.len());
    for component in &pipeline.components {
        let mut tensors = Vec::with_capacity(component.tensors.len());
        for (name, t) in &component.tensors {
            tensors.push((
                name.clone(),
                ParkedTensor {
                    dtype: t.dtype(),
                    shape: t.shape().clone(),
                    held: hold(t)?,
                },
            ));
        }
        components.push(ParkedComponent {
            name: component.name.clone(),
            config: component.config.clone(),
            tensors,
        });
    }
    Ok(components)
}

impl ParkedModel {
    /// Run `read` on the copy (a resume: see `io::read::resume`), unless
    /// it was freed. A copy freed while it is read is freed once `read`
    /// returns.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&Contents) -> Result<T>) -> Result<T> {
        let done = {
            let contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
            match &*contents {
                Some(contents) => read(contents),
                None => Err(Error::InvalidArgument(
                    "the parked copy was freed: load the model from its source".into(),
                )),
            }
        };
        // Checked once the lock is released, so that either `free` or
        // this frees it.
        if self.freed.load(Ordering::SeqCst) {
            let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
            drop(contents.take());
        }
        done
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! Parking to and resuming from one page-locked host buffer.

    use candle_core::cuda_backend::cudarc::driver::{result, DriverError, PinnedHostSlice};
    #[cfg(feature = "cuda")]
    use candle_core::Device;

    use super::{gather, len_of, Contents, Held, ParkedModel, ALIGN};
    use crate::error::{Error, Result};
    use crate::io::loaded::TensorPipeline;
    use crate::io::tensor_data;

    fn driver(e: DriverError) -> Error {
        Error::Device(format!("CUDA: {e}"))
    }

    pub(super) fn park(pipeline: &TensorPipeline) -> Result<ParkedModel> {
        let device = pipeline
            .components
            .iter()
            .flat_map(|c| c.tensors.values())
            .find_map(|t| match t.device() {
                Device::Cuda(d) => Some(d.clone()),
                _ => None,
            })
            .ok_or_else(|| Error::Device("internal: no CUDA tensor to park".into()))?;
        // The layout first: each tensor's offset in one buffer.
        let total = usize::try_from(super::parked_bytes(pipeline))
            .map_err(|_| Error::Device("a model too large to park".into()))?;
        let stream = device.cuda_stream();
        let context = stream.context().clone();
        // Plain page-locked memory: only the DMA engine reads and writes it.
        // SAFETY: uninitialised; every tensor's range is written by its copy
        // below before it is read (on resume), and the gaps are never read.
        let mut pinned: PinnedHostSlice<u8> =
            unsafe { context.alloc_pinned_with_flags::<u8>(total.max(1), 0) }.map_err(|e| {
                Error::Device(format!(
                    "CUDA: {total} bytes of page-locked host memory: {e}"
                ))
            })?;
        let base = pinned.as_mut_ptr().map_err(driver)?;
        let mut offset = 0usize;
        let components = gather(pipeline, |t| {
            offset = offset.next_multiple_of(ALIGN);
            let len = len_of(t);
            let data = tensor_data(t).map_err(|e| Error::Device(e.to_string()))?;
            if data.len != len {
                return Err(Error::Device("internal: a parked tensor's length".into()));
            }
            // SAFETY: `offset + len <= total` (the layout above), and the
            // buffer lives until the stream is synchronized below; its
            // bytes are not initialised yet, hence `MaybeUninit`.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    base.add(offset).cast::<std::mem::MaybeUninit<u8>>(),
                    len,
                )
            };
            // SAFETY: `data.address` is `len` bytes of the tensor's device
            // memory, alive while `pipeline` is borrowed.
            unsafe { result::memcpy_dtoh_async(dst, data.address, stream.cu_stream()) }
                .map_err(driver)?;
            let held = Held::Pinned { offset, len };
            offset += len;
            Ok(held)
        });
        // Whatever happened, no copy into the buffer may outlive this call.
        let synced = stream.synchronize().map_err(driver);
        let components = components?;
        synced?;
        let contents = Contents {
            components,
            info: pipeline.info.clone(),
            pinned: Some(pinned),
        };
        Ok(ParkedModel::new(contents, total as u64))
    }
}
