//! Where a loaded tensor's bytes are: the device, the address and the
//! length, for the bindings that hand them out (C's `mm_lease_tensor`,
//! Python's DLPack export) and for hosts running their own kernels.

use candle_core::{CpuStorage, DType, DeviceLocation, Storage, Tensor};

/// The memory a contiguous tensor's elements occupy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorData {
    /// The device whose memory holds the bytes.
    pub location: DeviceLocation,
    /// The address of the first element: a host pointer on the CPU, a
    /// `CUdeviceptr` on a CUDA device.
    pub address: u64,
    /// The length in bytes of the tensor's elements.
    pub len: usize,
}

/// Why a tensor's memory cannot be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Its elements are not one run of memory (a strided view).
    #[error("the tensor is not contiguous")]
    NotContiguous,
    /// Its dtype has no plain element type here.
    #[error("dtype {0:?} cannot be exported")]
    Dtype(DType),
    /// It lives on a device whose memory is not exposed (Metal, or CUDA in
    /// a build without the `cuda` feature).
    #[error("the tensor is on {0:?}, whose memory is not exposed")]
    Device(DeviceLocation),
}

/// Where the elements of `tensor` are. A loaded model's tensors are
/// contiguous, and neither candle nor the manager moves or writes their
/// memory while a lease holds them: the address stays valid (and the data
/// unchanged) until the lease it came from is released. On a CUDA device
/// the load's copies are complete before the model is ready, so the data
/// may be read from any stream.
pub fn tensor_data(tensor: &Tensor) -> Result<TensorData, DataError> {
    let location = tensor.device().location();
    let (storage, layout) = tensor.storage_and_layout();
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or(DataError::NotContiguous)?;
    let (address, len) = match &*storage {
        Storage::Cpu(cpu) => host(cpu, tensor.dtype(), start, end)?,
        #[cfg(feature = "cuda")]
        Storage::Cuda(cuda) => device(cuda, tensor.dtype(), start, end)?,
        _ => return Err(DataError::Device(location)),
    };
    Ok(TensorData {
        location,
        address,
        len,
    })
}

fn host(
    cpu: &CpuStorage,
    dtype: DType,
    start: usize,
    end: usize,
) -> Result<(u64, usize), DataError> {
    macro_rules! slice {
        ($v:expr) => {{
            // A layout outside its storage would be a bug in candle; it is
            // refused rather than read.
            let elems = $v.get(start..end).ok_or(DataError::NotContiguous)?;
            (elems.as_ptr() as u64, std::mem::size_of_val(elems))
        }};
    }
    Ok(match cpu {
        CpuStorage::U8(v) => slice!(v),
        CpuStorage::U32(v) => slice!(v),
        CpuStorage::I16(v) => slice!(v),
        CpuStorage::I32(v) => slice!(v),
        CpuStorage::I64(v) => slice!(v),
        CpuStorage::BF16(v) => slice!(v),
        CpuStorage::F16(v) => slice!(v),
        CpuStorage::F32(v) => slice!(v),
        CpuStorage::F64(v) => slice!(v),
        CpuStorage::F8E4M3(v) => slice!(v),
        _ => return Err(DataError::Dtype(dtype)),
    })
}

#[cfg(feature = "cuda")]
fn device(
    cuda: &candle_core::CudaStorage,
    dtype: DType,
    start: usize,
    end: usize,
) -> Result<(u64, usize), DataError> {
    use candle_core::cuda_backend::cudarc::driver::DevicePtr;

    let stream = cuda.device.cuda_stream();
    macro_rules! address {
        ($t:ty) => {{
            let slice = cuda
                .as_cuda_slice::<$t>()
                .map_err(|_| DataError::Dtype(dtype))?;
            if end > slice.len() {
                return Err(DataError::NotContiguous);
            }
            // The guard records the read on the stream when dropped: the
            // address is only read here, not the memory.
            let (base, _read) = slice.device_ptr(&stream);
            let size = std::mem::size_of::<$t>();
            (base + (start * size) as u64, (end - start) * size)
        }};
    }
    Ok(match dtype {
        DType::U8 => address!(u8),
        DType::U32 => address!(u32),
        DType::I16 => address!(i16),
        DType::I32 => address!(i32),
        DType::I64 => address!(i64),
        DType::F16 => address!(half::f16),
        DType::BF16 => address!(half::bf16),
        DType::F32 => address!(f32),
        DType::F64 => address!(f64),
        other => return Err(DataError::Dtype(other)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_contiguous_tensor_gives_its_elements() {
        let t = Tensor::arange(0f32, 12., &Device::Cpu)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let data = tensor_data(&t).unwrap();
        assert_eq!(data.location, DeviceLocation::Cpu);
        assert_eq!(data.len, 48);
        // SAFETY: the address and length of `t`'s live elements.
        let seen = unsafe { std::slice::from_raw_parts(data.address as *const f32, 12) };
        assert_eq!(seen, t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn a_row_of_a_tensor_starts_at_its_offset() {
        let t = Tensor::arange(0u32, 12, &Device::Cpu)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let row = t.get(1).unwrap();
        let whole = tensor_data(&t).unwrap();
        let data = tensor_data(&row).unwrap();
        assert_eq!(data.address, whole.address + 16);
        assert_eq!(data.len, 16);
    }

    #[test]
    fn a_strided_view_is_refused() {
        let t = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
        let view = t.t().unwrap();
        assert_eq!(tensor_data(&view), Err(DataError::NotContiguous));
    }
}
