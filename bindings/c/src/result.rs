//! `mm_result`: what every fallible function returns.
//!
//! `0` is success; `1..=20` are exactly the core's [`ErrorCode`] values;
//! codes of the binding itself start at `100`. A value, once given a meaning,
//! is never reused.

use std::ffi::c_char;

use model_manager::ErrorCode;

/// What a function returned: `MM_RESULT_OK` (0), or why it failed.
///
/// Values are explicit and never reused. 1 to 20 are the codes of
/// model-manager's errors (the same numbers in every binding); 100 and above
/// belong to the C binding. After a failure, `mm_last_error_message` gives a
/// description.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum mm_result {
    /// Success.
    Ok = 0,
    /// An argument was invalid (empty path, unknown device, ...).
    InvalidArgument = 1,
    /// The command is not legal in the current state (e.g. cancel while idle).
    InvalidTransition = 2,
    /// The load was cancelled by cancel, unload or destroy.
    Cancelled = 3,
    /// The load was replaced by a later load of another model.
    Superseded = 4,
    /// A lease was asked for while no model was ready.
    NotReady = 5,
    /// An unload timed out with leases still held.
    LeasesOutstanding = 6,
    /// An I/O error while reading a model file.
    Io = 7,
    /// A weights file is malformed (bad header, offsets, truncated data).
    InvalidModel = 8,
    /// A JSON config file is malformed.
    InvalidConfig = 9,
    /// A file the model needs does not exist.
    MissingFile = 10,
    /// A file name points outside the model folder.
    PathEscape = 11,
    /// The model does not fit in the memory budget.
    InsufficientMemory = 12,
    /// A tensor has a dtype that cannot be loaded or handed out.
    UnsupportedDtype = 13,
    /// The device failed (allocation, transfer, synchronisation).
    Device = 14,
    /// The manager has been shut down.
    ShutDown = 15,
    /// The pipeline could not be assembled from the loaded tensors.
    Assemble = 16,
    /// A bounded wait ran out of time.
    Timeout = 17,
    /// A pool's load waited past the pool's admission timeout for memory
    /// that leased or loading models hold (the message names them).
    MemoryBusy = 18,
    /// A pool's queue of loads waiting for memory is full.
    QueueFull = 19,
    /// The pool has no model of that id.
    UnknownModel = 20,
    /// A pointer argument was NULL.
    NullArgument = 100,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 101,
    /// model-manager panicked (a bug); the call had no effect that can be
    /// relied on, but the process is intact.
    Panic = 102,
    /// The caller's buffer is too small; the length needed was written.
    BufferTooSmall = 103,
    /// No such config key, tensor name or index.
    NotFound = 104,
    /// A blocking function was called from inside a model-manager callback.
    CalledFromCallback = 105,
    /// A tensor's data is not in host memory (loaded onto a GPU).
    NotOnCpu = 106,
    /// The binding's runtime (its worker threads) could not be started.
    Runtime = 107,
    /// An error code this binding does not know (from a newer core).
    Unknown = 108,
}

impl From<ErrorCode> for mm_result {
    /// The same number: `1..100` are the core's codes, checked against
    /// [`ErrorCode::ALL`] by this module's tests.
    fn from(code: ErrorCode) -> Self {
        match mm_result::from_u32(code as u32) {
            Some(r) if r != mm_result::Ok && (r as u32) < 100 => r,
            _ => mm_result::Unknown,
        }
    }
}

/// Every value, in order (for tests and `mm_result_name`).
const ALL: [mm_result; 30] = [
    mm_result::Ok,
    mm_result::InvalidArgument,
    mm_result::InvalidTransition,
    mm_result::Cancelled,
    mm_result::Superseded,
    mm_result::NotReady,
    mm_result::LeasesOutstanding,
    mm_result::Io,
    mm_result::InvalidModel,
    mm_result::InvalidConfig,
    mm_result::MissingFile,
    mm_result::PathEscape,
    mm_result::InsufficientMemory,
    mm_result::UnsupportedDtype,
    mm_result::Device,
    mm_result::ShutDown,
    mm_result::Assemble,
    mm_result::Timeout,
    mm_result::MemoryBusy,
    mm_result::QueueFull,
    mm_result::UnknownModel,
    mm_result::NullArgument,
    mm_result::InvalidUtf8,
    mm_result::Panic,
    mm_result::BufferTooSmall,
    mm_result::NotFound,
    mm_result::CalledFromCallback,
    mm_result::NotOnCpu,
    mm_result::Runtime,
    mm_result::Unknown,
];

impl mm_result {
    /// The constant's name as written in the header, NUL-terminated.
    pub fn name(self) -> &'static str {
        match self {
            mm_result::Ok => "MM_RESULT_OK\0",
            mm_result::InvalidArgument => "MM_RESULT_INVALID_ARGUMENT\0",
            mm_result::InvalidTransition => "MM_RESULT_INVALID_TRANSITION\0",
            mm_result::Cancelled => "MM_RESULT_CANCELLED\0",
            mm_result::Superseded => "MM_RESULT_SUPERSEDED\0",
            mm_result::NotReady => "MM_RESULT_NOT_READY\0",
            mm_result::LeasesOutstanding => "MM_RESULT_LEASES_OUTSTANDING\0",
            mm_result::Io => "MM_RESULT_IO\0",
            mm_result::InvalidModel => "MM_RESULT_INVALID_MODEL\0",
            mm_result::InvalidConfig => "MM_RESULT_INVALID_CONFIG\0",
            mm_result::MissingFile => "MM_RESULT_MISSING_FILE\0",
            mm_result::PathEscape => "MM_RESULT_PATH_ESCAPE\0",
            mm_result::InsufficientMemory => "MM_RESULT_INSUFFICIENT_MEMORY\0",
            mm_result::UnsupportedDtype => "MM_RESULT_UNSUPPORTED_DTYPE\0",
            mm_result::Device => "MM_RESULT_DEVICE\0",
            mm_result::ShutDown => "MM_RESULT_SHUT_DOWN\0",
            mm_result::Assemble => "MM_RESULT_ASSEMBLE\0",
            mm_result::Timeout => "MM_RESULT_TIMEOUT\0",
            mm_result::MemoryBusy => "MM_RESULT_MEMORY_BUSY\0",
            mm_result::QueueFull => "MM_RESULT_QUEUE_FULL\0",
            mm_result::UnknownModel => "MM_RESULT_UNKNOWN_MODEL\0",
            mm_result::NullArgument => "MM_RESULT_NULL_ARGUMENT\0",
            mm_result::InvalidUtf8 => "MM_RESULT_INVALID_UTF8\0",
            mm_result::Panic => "MM_RESULT_PANIC\0",
            mm_result::BufferTooSmall => "MM_RESULT_BUFFER_TOO_SMALL\0",
            mm_result::NotFound => "MM_RESULT_NOT_FOUND\0",
            mm_result::CalledFromCallback => "MM_RESULT_CALLED_FROM_CALLBACK\0",
            mm_result::NotOnCpu => "MM_RESULT_NOT_ON_CPU\0",
            mm_result::Runtime => "MM_RESULT_RUNTIME\0",
            mm_result::Unknown => "MM_RESULT_UNKNOWN\0",
        }
    }

    /// The value for a raw number, if it names one.
    pub fn from_u32(value: u32) -> Option<mm_result> {
        ALL.into_iter().find(|r| *r as u32 == value)
    }
}

/// The name of a result code, such as `"MM_RESULT_NOT_READY"`, or
/// `"MM_RESULT_UNKNOWN"` for a number that is not one.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: the string is static; do not free it.
#[no_mangle]
pub extern "C" fn mm_result_name(result: u32) -> *const c_char {
    mm_result::from_u32(result)
        .unwrap_or(mm_result::Unknown)
        .name()
        .as_ptr()
        .cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `InvalidModel` -> `MM_RESULT_INVALID_MODEL`.
    fn c_name(core_name: &str) -> String {
        let mut out = String::from("MM_RESULT_");
        for (i, ch) in core_name.chars().enumerate() {
            if ch.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_uppercase());
        }
        out.push('\0');
        out
    }

    /// `mm_result` holds exactly the core's codes below 100, with the
    /// core's numbers and names (the header is cbindgen's rendering of
    /// this enum, diffed by the C tests).
    #[test]
    fn core_codes_are_the_cores_table() {
        for &code in ErrorCode::ALL {
            let r = mm_result::from(code);
            assert_eq!(r as u32, code as u32, "{code:?}");
            assert_eq!(r.name(), c_name(code.name()), "{code:?}");
        }
        let ours: Vec<u32> = ALL
            .into_iter()
            .map(|r| r as u32)
            .filter(|&v| v != 0 && v < 100)
            .collect();
        let core: Vec<u32> = ErrorCode::ALL.iter().map(|&c| c as u32).collect();
        assert_eq!(ours, core, "mm_result lists a code the core does not have");
    }

    #[test]
    fn values_are_unique_and_named() {
        let mut seen = std::collections::HashSet::new();
        for r in ALL {
            assert!(seen.insert(r as u32), "{r:?} reuses a value");
            assert_eq!(mm_result::from_u32(r as u32), Some(r));
            let name = r.name();
            assert!(name.starts_with("MM_RESULT_") && name.ends_with('\0'));
        }
        assert_eq!(mm_result::Ok as u32, 0);
        assert_eq!(mm_result::NullArgument as u32, 100);
        assert_eq!(mm_result::from_u32(18), Some(mm_result::MemoryBusy));
        assert_eq!(mm_result::from_u32(20), Some(mm_result::UnknownModel));
        assert_eq!(mm_result::from_u32(21), None);
        assert_eq!(mm_result::from_u32(99), None);
    }

    #[test]
    fn result_name_is_nul_terminated() {
        // SAFETY: static NUL-terminated strings.
        let name = unsafe { std::ffi::CStr::from_ptr(mm_result_name(5)) };
        assert_eq!(name.to_str(), Ok("MM_RESULT_NOT_READY"));
        // SAFETY: as above.
        let name = unsafe { std::ffi::CStr::from_ptr(mm_result_name(12345)) };
        assert_eq!(name.to_str(), Ok("MM_RESULT_UNKNOWN"));
    }
}
