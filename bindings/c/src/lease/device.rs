//! A leased tensor wherever it lives: its device address, for a host's own
//! kernels (`mm_lease_tensor_on_device`).

use model_manager::candle_core::{DeviceLocation, Tensor};
use model_manager::tensor_data;

use super::{c_dtype, data_failure, mm_lease};
use crate::ffi::{read_into, Failure};
use crate::mm_result;
use crate::tensors::{mm_device_kind, mm_device_tensor};

/// Where the data of a contiguous tensor is: (kind, ordinal, address, bytes).
fn device_data(tensor: &Tensor) -> Result<(mm_device_kind, u32, u64, usize), Failure> {
    let data = tensor_data(tensor).map_err(data_failure)?;
    let (kind, ordinal) = match data.location {
        DeviceLocation::Cpu => (mm_device_kind::Cpu, 0),
        DeviceLocation::Cuda { gpu_id } => (
            mm_device_kind::Cuda,
            u32::try_from(gpu_id).unwrap_or(u32::MAX),
        ),
        other => {
            return Err(Failure::new(
                mm_result::NotOnCpu,
                format!("the tensor is on {other:?}, which the C API does not expose"),
            ))
        }
    };
    Ok((kind, ordinal, data.address, data.len))
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
