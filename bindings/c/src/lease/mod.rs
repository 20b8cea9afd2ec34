//! `mm_lease`: the ready model, kept alive while the lease is held, and its
//! tensors seen as plain C data. A lease comes from a manager
//! (`mm_manager_acquire`) or from a pool (`mm_pool_acquire`); both are read
//! and released by the same functions.

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use model_manager::candle_core::Tensor;
use model_manager::{tensor_data, DataError, Lease, PoolLease, TensorPipeline};

use crate::ffi::{
    borrow, boundary, boundary_void, cstr, free_handle, into_handle, read_into, Failure, Out,
};
use crate::manager::mm_manager;
use crate::mm_result;
use crate::tensors::mm_tensor;
use crate::types::mm_dtype;

/// A lease on the ready model (of a manager, or of one model of a pool).
/// Opaque; release it with `mm_lease_release`.
pub struct mm_lease {
    // Field order is drop order: the tensors' references go before the lease,
    // so that the lease's release leaves an unload holding the only one.
    index: OnceLock<Vec<Entry>>,
    lease: Held,
}

/// What a lease holds: a manager's lease or a pool's.
enum Held {
    Manager(Lease),
    Pool(PoolLease),
}

impl Held {
    fn pipeline(&self) -> &TensorPipeline {
        match self {
            Held::Manager(lease) => lease.pipeline(),
            Held::Pool(lease) => lease.pipeline(),
        }
    }
}

struct Entry {
    name: CString,
    tensor: Tensor,
}

impl mm_lease {
    /// A handle for a pool's lease.
    pub(crate) fn from_pool(lease: PoolLease) -> Self {
        mm_lease {
            index: OnceLock::new(),
            lease: Held::Pool(lease),
        }
    }

    /// Every tensor, named as C sees it, built on first use.
    fn entries(&self) -> &[Entry] {
        self.index.get_or_init(|| {
            let pipeline = self.lease.pipeline();
            let single = pipeline.components().len() == 1;
            pipeline
                .tensors()
                .map(|(component, name, tensor)| {
                    let full = if single {
                        name.to_owned()
                    } else {
                        format!("{component}/{name}")
                    };
                    Entry {
                        // Names come from JSON strings, which may hold "\u0000":
                        // cut there rather than fail.
                        name: CString::new(full).unwrap_or_else(|e| {
                            let cut = e.nul_position();
                            let mut bytes = e.into_vec();
                            bytes.truncate(cut);
                            CString::new(bytes).expect("no NUL before the first NUL")
                        }),
                        tensor: tensor.clone(),
                    }
                })
                .collect()
        })
    }

    fn entry(&self, index: usize) -> Result<&Entry, Failure> {
        let entries = self.entries();
        entries.get(index).ok_or_else(|| {
            Failure::new(
                mm_result::NotFound,
                format!(
                    "tensor index {index} is out of range ({} tensors)",
                    entries.len()
                ),
            )
        })
    }
}

/// The tensor's C dtype.
fn c_dtype(tensor: &Tensor) -> Result<mm_dtype, Failure> {
    mm_dtype::from_candle(tensor.dtype()).ok_or_else(|| no_c_dtype(tensor.dtype()))
}

fn no_c_dtype(dtype: model_manager::candle_core::DType) -> Failure {
    Failure::new(
        mm_result::UnsupportedDtype,
        format!("dtype {dtype:?} has no C equivalent"),
    )
}

/// The bytes of a contiguous CPU tensor, with its C dtype.
fn host_bytes(tensor: &Tensor) -> Result<(mm_dtype, *const u8, usize), Failure> {
    let dtype = c_dtype(tensor)?;
    if !tensor.device().is_cpu() {
        return Err(Failure::new(
            mm_result::NotOnCpu,
            format!(
                "the tensor is on {:?}, not in host memory",
                tensor.device().location()
            ),
        ));
    }
    let data = tensor_data(tensor).map_err(data_failure)?;
    Ok((dtype, data.address as *const u8, data.len))
}

/// A tensor whose memory cannot be handed out, as a C result.
fn data_failure(error: DataError) -> Failure {
    let code = match error {
        DataError::Device(_) => mm_result::NotOnCpu,
        DataError::NotContiguous | DataError::Dtype(_) => mm_result::UnsupportedDtype,
    };
    Failure::new(code, error.to_string())
}

/// A lease on the ready model, into `*lease_out`: while it is held the model
/// stays loaded and every pointer obtained through it stays valid; an unload
/// waits (in Unloading) until every lease is released. Fails at once with
/// `MM_RESULT_NOT_READY` unless Ready.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: the caller owns the lease and must release it with
/// `mm_lease_release`, before or after destroying the manager.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_acquire(
    manager: *const mm_manager,
    lease_out: *mut *mut mm_lease,
) -> mm_result {
    let read = |manager: &mm_manager| {
        let lease = manager.inner.acquire()?;
        Ok(into_handle(mm_lease {
            index: OnceLock::new(),
            lease: Held::Manager(lease),
        }))
    };
    // SAFETY: NULL or a live manager, NULL or a writable `mm_lease *`, per
    // the header.
    unsafe { read_into(manager, "manager", lease_out, "lease_out", read) }
}

/// Release a lease and free it; every pointer obtained through it becomes
/// invalid. Releasing the last lease lets a pending unload finish (for a
/// pool's lease: starts the model's keep-alive clock when it was the model's
/// last lease, and lets loads waiting for memory look again). NULL is a
/// no-op.
///
/// Threads: any, but not concurrently with other calls on the same lease.
/// Callbacks: may be called from them.
/// Ownership: takes back the lease.
#[no_mangle]
pub unsafe extern "C" fn mm_lease_release(lease: *mut mm_lease) {
    boundary_void(|| {
        // SAFETY: NULL or a lease from `mm_manager_acquire` that the caller
        // does not use again.
        drop(unsafe { free_handle(lease) });
    })
}

/// The version of a pool's model this lease holds, into `*version_out`
/// (each load or reload of the model, failed ones included, takes the next
/// number, from 1; a lease keeps the version it was taken on). `MM_RESULT_NOT_FOUND` for a lease
/// from `mm_manager_acquire`, which has no versions.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `lease` is only borrowed for the call; `*version_out` is the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_lease_version(
    lease: *const mm_lease,
    version_out: *mut u64,
) -> mm_result {
    let read = |lease: &mm_lease| match &lease.lease {
        Held::Pool(lease) => Ok(lease.version()),
        Held::Manager(_) => Err(Failure::new(
            mm_result::NotFound,
            "a manager's lease has no version (only a pool's has)",
        )),
    };
    // SAFETY: NULL or a live lease, NULL or a writable `uint64_t`, per the
    // header.
    unsafe { read_into(lease, "lease", version_out, "version_out", read) }
}

/// The working memory reserved with this lease (`mm_pool_acquire_with`),
/// into `*bytes_out`: 0 for other leases.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `lease` is only borrowed for the call; `*bytes_out` is the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_lease_working_bytes(
    lease: *const mm_lease,
    bytes_out: *mut u64,
) -> mm_result {
    let read = |lease: &mm_lease| {
        Ok(match &lease.lease {
            Held::Pool(lease) => lease.working_bytes(),
            Held::Manager(_) => 0,
        })
    };
    // SAFETY: NULL or a live lease, NULL or a writable `uint64_t`, per the
    // header.
    unsafe { read_into(lease, "lease", bytes_out, "bytes_out", read) }
}

/// Number of tensors in the leased model, into `*count_out`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `lease` is only borrowed for the call; `*count_out` is the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_lease_tensor_count(
    lease: *const mm_lease,
    count_out: *mut usize,
) -> mm_result {
    let read = |lease: &mm_lease| Ok(lease.entries().len());
    // SAFETY: NULL or a live lease, NULL or a writable `size_t`, per the
    // header.
    unsafe { read_into(lease, "lease", count_out, "count_out", read) }
}

/// The name of tensor `index` (0 ≤ index < count, in a stable order: by
/// component, then by name), into `*name_out`. `MM_RESULT_NOT_FOUND` for an
/// index out of range.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: the string belongs to the lease and is valid until
/// `mm_lease_release`; do not free it.
#[no_mangle]
pub unsafe extern "C" fn mm_lease_tensor_name(
    lease: *const mm_lease,
    index: usize,
    name_out: *mut *const c_char,
) -> mm_result {
    let read = |lease: &mm_lease| Ok(lease.entry(index)?.name.as_ptr());
    // SAFETY: NULL or a live lease, NULL or a writable `const char *`, per
    // the header.
    unsafe { read_into(lease, "lease", name_out, "name_out", read) }
}

/// The index of the tensor called `name` (as `mm_lease_tensor_name` gives
/// it; in a pipeline of several components a bare name finds the first
/// component's tensor of that name), into `*index_out`.
/// `MM_RESULT_NOT_FOUND` if there is none.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `name` is read during the call only.
#[no_mangle]
pub unsafe extern "C" fn mm_lease_tensor_find(
    lease: *const mm_lease,
    name: *const c_char,
    index_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live lease, per the header.
        let lease = unsafe { borrow(lease, "lease") }?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let name = unsafe { cstr(name, "name") }?;
        let out = Out::new(index_out, "index_out")?;
        let entries = lease.entries();
        let exact = entries
            .iter()
            .position(|e| e.name.as_bytes() == name.as_bytes());
        let bare = || {
            entries.iter().position(|e| {
                e.name
                    .to_str()
                    .ok()
                    .and_then(|n| n.split_once('/'))
                    .is_some_and(|(_, rest)| rest == name)
            })
        };
        let index = exact
            .or_else(bare)
            .ok_or_else(|| Failure::new(mm_result::NotFound, format!("no tensor {name:?}")))?;
        // SAFETY: non-NULL; the caller passes a writable `size_t`.
        unsafe { out.write(index) };
        Ok(())
    })
}

/// Tensor `index`: its name, dtype, shape and a pointer to its data in host
/// memory, into `*tensor_out`. `MM_RESULT_NOT_FOUND` for an index out of
/// range; `MM_RESULT_NOT_ON_CPU` for a model loaded onto a GPU;
/// `MM_RESULT_UNSUPPORTED_DTYPE` for a dtype with no `mm_dtype`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: every pointer written belongs to the lease and is valid until
/// `mm_lease_release`; the data is read-only.
#[no_mangle]
pub unsafe extern "C" fn mm_lease_tensor(
    lease: *const mm_lease,
    index: usize,
    tensor_out: *mut mm_tensor,
) -> mm_result {
    let read = |lease: &mm_lease| {
        let entry = lease.entry(index)?;
        let (dtype, data, data_len) = host_bytes(&entry.tensor)?;
        let dims = entry.tensor.dims();
        Ok(mm_tensor {
            name: entry.name.as_ptr(),
            dtype,
            rank: dims.len(),
            shape: dims.as_ptr(),
            data: data.cast(),
            data_len,
        })
    };
    // SAFETY: NULL or a live lease, NULL or a writable `mm_tensor`, per the
    // header.
    unsafe { read_into(lease, "lease", tensor_out, "tensor_out", read) }
}

// Kept last: the header lists items in the order they are read.
mod device;

pub use device::mm_lease_tensor_on_device;
