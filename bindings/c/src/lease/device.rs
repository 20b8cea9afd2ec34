//! A leased tensor wherever it lives: its device address, for a host's own
//! kernels (`mm_lease_tensor_on_device`).

#[cfg(feature = "cuda")]
use model_manager::candle_core::Storage;
use model_manager::candle_core::Tensor;

#[cfg(feature = "cuda")]
use super::no_c_dtype;
use super::{c_dtype, host_bytes, mm_lease};
use crate::ffi::{read_into, Failure};
use crate::mm_result;
use crate::tensors::{mm_device_kind, mm_device_tensor};

/// Where the data of a contiguous tensor is: (kind, ordinal, address, bytes).
fn device_data(tensor: &Tensor) -> Result<(mm_device_kind, u32, u64, usize), Failure> {
    if tensor.device().is_cpu() {
        let (_, data, len) = host_bytes(tensor)?;
        return Ok((mm_device_kind::Cpu, 0, data as u64, len));
    }
    cuda_data(tensor)
}

#[cfg(feature = "cuda")]
fn cuda_data(tensor: &Tensor) -> Result<(mm_device_kind, u32, u64, usize), Failure> {
    use model_manager::candle_core::cuda_backend::cudarc::driver::DevicePtr;
    use model_manager::candle_core::DeviceLocation;

    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cuda(cuda) = &*storage else {
        return Err(not_exposed(tensor));
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(Failure::new(
            mm_result::UnsupportedDtype,
            "the tensor is not contiguous",
        ));
    };
    let ordinal = match tensor.device().location() {
        DeviceLocation::Cuda { gpu_id } => u32::try_from(gpu_id).unwrap_or(u32::MAX),
        _ => 0,
    };
    let stream = cuda.device.cuda_stream();
    macro_rules! address {
        ($t:ty) => {{
            let slice = cuda
                .as_cuda_slice::<$t>()
                .map_err(|e| Failure::new(mm_result::UnsupportedDtype, e.to_string()))?;
            let (base, _read) = slice.device_ptr(&stream);
            let size = std::mem::size_of::<$t>();
            (base + (start * size) as u64, (end - start) * size)
        }};
    }
    use model_manager::candle_core::DType;
    let (address, len) = match tensor.dtype() {
        DType::U8 => address!(u8),
        DType::U32 => address!(u32),
        DType::I16 => address!(i16),
        DType::I32 => address!(i32),
        DType::I64 => address!(i64),
        DType::F16 => address!(half::f16),
        DType::BF16 => address!(half::bf16),
        DType::F32 => address!(f32),
        DType::F64 => address!(f64),
        other => return Err(no_c_dtype(other)),
    };
    Ok((mm_device_kind::Cuda, ordinal, address, len))
}

#[cfg(not(feature = "cuda"))]
fn cuda_data(tensor: &Tensor) -> Result<(mm_device_kind, u32, u64, usize), Failure> {
    Err(not_exposed(tensor))
}

fn not_exposed(tensor: &Tensor) -> Failure {
    Failure::new(
        mm_result::NotOnCpu,
        format!(
            "the tensor is on {:?}, which the C API does not expose",
            tensor.device().location()
        ),
    )
}

/// Tensor `index` wherever it lives, into `*tensor_out`: on the CPU as
/// `mm_lease_tensor` gives it; on a CUDA device (a library built with the
/// `cuda` feature, a manager created with device `"cuda:N"`) its
/// `CUdeviceptr` and byte length, for a host's own kernels (see
/// `mm_device_tensor` for the ordering rules). `MM_RESULT_NOT_FOUND` for an index out of range;
/// `MM_RESULT_NOT_ON_CPU` for a device the C API does not expose (Metal);
/// `MM_RESULT_UNSUPPORTED_DTYPE` for a dtype with no `mm_dtype`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: every pointer and address written belongs to the lease and is
/// valid until `mm_lease_release`; the data is read-only (device memory
/// too: the manager frees it after the last lease is released).
#[no_mangle]
pub unsafe extern "C" fn mm_lease_tensor_on_device(
    lease: *const mm_lease,
    index: usize,
    tensor_out: *mut mm_device_tensor,
) -> mm_result {
    let read = |lease: &mm_lease| {
        let entry = lease.entry(index)?;
        let dtype = c_dtype(&entry.tensor)?;
        let (kind, ordinal, address, data_len) = device_data(&entry.tensor)?;
        let dims = entry.tensor.dims();
        Ok(mm_device_tensor {
            name: entry.name.as_ptr(),
            dtype,
            rank: dims.len(),
            shape: dims.as_ptr(),
            kind,
            ordinal,
            address,
            data_len,
        })
    };
    // SAFETY: NULL or a live lease, NULL or a writable `mm_device_tensor`,
    // per the header.
    unsafe { read_into(lease, "lease", tensor_out, "tensor_out", read) }
}
