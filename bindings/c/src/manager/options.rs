//! `mm_manager_options_init`: the defaults of the options struct.

use crate::callbacks::mm_manager_options;
use crate::ffi::{boundary, Out};
use crate::mm_result;
use crate::types::MM_DTYPE_KEEP;

/// Fill `*options` with the defaults: device `"cpu"`, the default memory
/// budget, 4 MiB chunks, the default read threads, dtypes kept, 5 s drain
/// timeout, no progress callback.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `options` is the caller's; `options->device` is set to a
/// static string.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_options_init(options: *mut mm_manager_options) -> mm_result {
    boundary(|| {
        let out = Out::new(options, "options")?;
        // SAFETY: non-NULL; the caller passes a writable `mm_manager_options`.
        unsafe {
            out.write(mm_manager_options {
                device: c"cpu".as_ptr(),
                memory_budget: 0,
                chunk_size: 0,
                read_threads: 0,
                dtype: MM_DTYPE_KEEP,
                drain_timeout_ms: 0,
                progress: None,
                progress_userdata: std::ptr::null_mut(),
            })
        };
        Ok(())
    })
}
