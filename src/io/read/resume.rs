//! A parked model copied back onto the device (a pool's host tier, see
//! [`crate::io::park`]): one copy per tensor, counted in the load's
//! reservation, with a read's progress and cancellation.

#[cfg(feature = "cuda")]
use candle_core::Device;
use candle_core::Tensor;

use super::ReadContext;
use crate::error::{Error, Result};
use crate::io::loaded::{Component, TensorPipeline};
use crate::io::park::{len_of, Contents, Held, ParkedModel};
use crate::resource::Reservation;

/// Copy a parked model back onto `ctx.device`, counting what it allocates
/// in `reservation`; progress and cancellation as a read's, after each
/// tensor. On an error or a cancel, what was copied is dropped.
pub(crate) fn resume(
    parked: &ParkedModel,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<TensorPipeline> {
    parked.read(|contents| copy_back(contents, parked.bytes(), ctx, reservation))
}

fn copy_back(
    parked: &Contents,
    bytes: u64,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<TensorPipeline> {
    ctx.progress.set_totals(bytes, parked.info.tensors);
    #[cfg(feature = "cuda")]
    let cuda = match ctx.device {
        Device::Cuda(device) => Some(cuda::Resume::new(device)),
        _ => None,
    };
    let mut components = Vec::with_capacity(parked.components.len());
    for component in &parked.components {
        let mut tensors = std::collections::BTreeMap::new();
        for (name, t) in &component.tensors {
            ctx.checkpoint()?;
            let tensor = match &t.held {
                // Nothing to copy (a device refuses an empty allocation).
                _ if t.shape.elem_count() == 0 => Tensor::zeros(&t.shape, t.dtype, ctx.device)?,
                Held::Copy(copy) => copy.to_device(ctx.device)?.copy()?,
                #[cfg(feature = "cuda")]
                Held::Pinned { offset, len } => match (&cuda, &parked.pinned) {
                    (Some(cuda), Some(pinned)) => {
                        cuda.tensor(pinned, *offset, *len, t.dtype, &t.shape)?
                    }
                    _ => {
                        return Err(Error::Device(
                            "a model parked from a CUDA device resumes on one".into(),
                        ))
                    }
                },
                #[cfg(not(feature = "cuda"))]
                Held::Pinned { .. } => {
                    return Err(Error::Device("internal: pinned memory without CUDA".into()))
                }
            };
            let len = len_of(&tensor) as u64;
            reservation.grow(len);
            tensors.insert(name.clone(), tensor);
            ctx.progress.tensor_done();
            ctx.advance(len)?;
        }
        components.push(Component {
            name: component.name.clone(),
            config: component.config.clone(),
            tensors,
        });
    }
    #[cfg(feature = "cuda")]
    if let Some(cuda) = &cuda {
        // Every copy is complete before the model is ready.
        cuda.finish()?;
    }
    Ok(TensorPipeline {
        components,
        info: parked.info.clone(),
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    //! Copies from the pinned buffer to one device, on its stream.

    use candle_core::cuda_backend::cudarc::driver::{result, PinnedHostSlice};
    use candle_core::cuda_backend::CudaDevice;
    use candle_core::{DType, Shape, Tensor};

    use crate::error::Result;
    use crate::io::read::cuda::DeviceBuffer;
    use crate::io::read::staging::driver;

    pub(super) struct Resume {
        device: CudaDevice,
    }

    impl Resume {
        pub(super) fn new(device: &CudaDevice) -> Self {
            Resume {
                device: device.clone(),
            }
        }

        /// One tensor, from `pinned[offset..offset + len]`.
        pub(super) fn tensor(
            &self,
            pinned: &PinnedHostSlice<u8>,
            offset: usize,
            len: usize,
            dtype: DType,
            shape: &Shape,
        ) -> Result<Tensor> {
            let stream = self.device.cuda_stream();
            let mut buffer = DeviceBuffer::alloc(&self.device, dtype, len)?;
            let base = pinned.as_ptr().map_err(driver)?;
            // SAFETY: `offset + len` lies within the buffer (the park's
            // layout), which the parked model keeps alive past `finish`
            // (its lock is held while this resume runs).
            let src = unsafe { std::slice::from_raw_parts(base.add(offset), len) };
            {
                let (dst, _write) = buffer.device_ptr_mut(&stream);
                // SAFETY: `dst` is a fresh allocation of at least `len`
                // bytes, freed on this stream after the copy if dropped.
                unsafe { result::memcpy_htod_async(dst, src, stream.cu_stream()) }
                    .map_err(driver)?;
            }
            Ok(buffer.into_tensor(&self.device).reshape(shape)?)
        }

        /// Wait for every copy.
        pub(super) fn finish(&self) -> Result<()> {
            self.device.cuda_stream().synchronize().map_err(driver)
        }
    }

    impl Drop for Resume {
        fn drop(&mut self) {
            // A resume that stopped early: its copies end before the
            // buffers they write are freed (on the same stream) and before
            // the pinned buffer may be.
            let _ = self.device.cuda_stream().synchronize();
        }
    }
}
