//! The C entry points that take strings, numbers and buffers, called as a C
//! host would (through the `model-manager-c` crate): they must never panic
//! (a panic aborts here, even one `catch_unwind` would turn into
//! MM_RESULT_PANIC) and must keep the header's promises on out-params and
//! buffers. Managers are created once per process; a tiny pipeline is
//! loaded once and leased for the lease functions.
#![no_main]

use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;
use std::ptr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use model_manager_c::*;

#[derive(Arbitrary, Debug)]
struct Input {
    /// For `mm_manager_new` (with the options below).
    device: Vec<u8>,
    memory_budget: u64,
    chunk_size: u16,
    read_threads: u8,
    dtype: u32,
    /// For `mm_result_name` / `mm_state_name`.
    number: u32,
    /// A path under the scratch folder for `mm_manager_load`.
    path: Vec<u8>,
    /// For `mm_manager_config`.
    key: Option<Vec<u8>>,
    config_len: u8,
    config_null_buf: bool,
    /// For `mm_last_error_message`.
    message_len: u8,
    message_null_buf: bool,
    /// For `mm_lease_tensor_find` / `_name` / `mm_lease_tensor`.
    tensor: Option<Vec<u8>>,
    index: usize,
    /// Whether to call the functions above, to keep most inputs fast.
    new_manager: bool,
    load: bool,
}

struct Fixture {
    /// Scratch folder: loads stay under it.
    dir: PathBuf,
    /// For fuzzed loads.
    loader: *mut mm_manager,
    /// Holds the tiny pipeline, leased.
    ready: *mut mm_manager,
    lease: *mut mm_lease,
}

// SAFETY: the handles are only used through the C API, whose functions
// used here may be called from any thread, concurrently.
unsafe impl Send for Fixture {}
unsafe impl Sync for Fixture {}

fn write_tensor_file(path: &std::path::Path, names: &[&str]) {
    let mut entries = Vec::new();
    for (i, name) in names.iter().enumerate() {
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[{},{}]}}",
            i * 8,
            i * 8 + 8
        ));
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, names.len() * 8));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap()
            .keep();
        // A tiny diffusers pipeline, and a tiny single model beside it.
        let pipe = dir.join("pipe");
        std::fs::create_dir_all(&pipe).unwrap();
        std::fs::write(
            pipe.join("model_index.json"),
            r#"{"_class_name":"Tiny","unet":["diffusers","UNet"],"vae":["diffusers","VAE"],"scheduler":["diffusers","DDIM"],"list":[1,2,{"a":null}],"s":"x\u0000y"}"#,
        )
        .unwrap();
        std::fs::create_dir_all(pipe.join("unet")).unwrap();
        std::fs::write(pipe.join("unet/config.json"), r#"{"sample_size": 8}"#).unwrap();
        write_tensor_file(
            &pipe.join("unet/diffusion_pytorch_model.safetensors"),
            &["w", "conv.bias", "a/b"],
        );
        write_tensor_file(
            &pipe.join("vae/diffusion_pytorch_model.safetensors"),
            &["w", "z"],
        );
        std::fs::create_dir_all(pipe.join("scheduler")).unwrap();
        std::fs::write(pipe.join("scheduler/scheduler_config.json"), "{}").unwrap();
        write_tensor_file(&dir.join("tiny/model.safetensors"), &["w", "b"]);
        std::fs::write(dir.join("tiny/config.json"), r#"{"sample_size": 4}"#).unwrap();

        let new = || {
            let mut options = std::mem::MaybeUninit::<mm_manager_options>::uninit();
            // SAFETY: a writable options struct.
            assert_eq!(unsafe { mm_manager_options_init(options.as_mut_ptr()) }, mm_result::Ok);
            // SAFETY: initialised by the call above.
            let mut options = unsafe { options.assume_init() };
            options.memory_budget = 64 << 20;
            options.read_threads = 1;
            options.drain_timeout_ms = 1000;
            let mut manager = ptr::null_mut();
            // SAFETY: valid options and out-param.
            assert_eq!(unsafe { mm_manager_new(&options, &mut manager) }, mm_result::Ok);
            manager
        };
        let loader = new();
        let ready = new();
        let path = CString::new(pipe.to_str().unwrap()).unwrap();
        let mut state = mm_state::Idle;
        // SAFETY: a live manager and a NUL-terminated path.
        unsafe {
            assert_eq!(
                mm_manager_load(ready, path.as_ptr(), None, ptr::null_mut()),
                mm_result::Ok
            );
            assert_eq!(mm_manager_wait(ready, 30_000, &mut state), mm_result::Ok);
        }
        assert_eq!(state, mm_state::Ready);
        let mut lease = ptr::null_mut();
        // SAFETY: a live, ready manager.
        assert_eq!(unsafe { mm_manager_acquire(ready, &mut lease) }, mm_result::Ok);
        Fixture {
            dir,
            loader,
            ready,
            lease,
        }
    })
}

/// `bytes` up to the first NUL, NUL-terminated.
fn c_string(bytes: &[u8]) -> CString {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    CString::new(&bytes[..end]).unwrap()
}

/// A static string a name function returned: non-NULL, NUL-terminated.
fn check_name(name: *const c_char) {
    assert!(!name.is_null());
    // SAFETY: the header promises a static NUL-terminated string.
    let name = unsafe { CStr::from_ptr(name) };
    assert!(name.to_str().is_ok_and(|s| !s.is_empty()));
}

/// Check a `(buf, len, len_out)` call against the header's promises:
/// filled with `0xAA` before; on OK NUL-terminated at `*len_out < len`; on
/// BUFFER_TOO_SMALL nothing copied and `*len_out >= len`; else untouched.
fn check_buffer(result: mm_result, buf: &[u8], len: usize, len_out: usize) {
    const SENTINEL: usize = usize::MAX;
    match result {
        mm_result::Ok => {
            assert!(len_out < len, "{len_out} < {len}");
            assert_eq!(buf[len_out], 0, "NUL-terminated");
        }
        mm_result::BufferTooSmall => {
            assert!(len_out >= len, "needed {len_out}, had {len}");
            assert!(buf.iter().all(|&b| b == 0xAA), "nothing copied");
        }
        other => {
            assert_eq!(len_out, SENTINEL, "{other:?}: len_out written on failure");
            assert!(
                buf.iter().all(|&b| b == 0xAA),
                "{other:?}: buf written on failure"
            );
        }
    }
}

/// A buffer of `len` bytes (or NULL with `len` claimed) for a copy-out call.
fn call_with_buffer(
    len: u8,
    null: bool,
    f: impl FnOnce(*mut c_char, usize, *mut usize) -> mm_result,
) -> mm_result {
    let len = usize::from(len);
    let mut buf = vec![0xAAu8; len];
    let mut len_out = usize::MAX;
    let ptr = if null || len == 0 {
        ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    let result = f(ptr, len, &mut len_out);
    assert_ne!(result, mm_result::Panic);
    if null && len != 0 {
        // Refused before use (the other arguments may be checked first).
        assert!(
            matches!(result, mm_result::NullArgument | mm_result::InvalidUtf8),
            "{result:?}"
        );
        assert_eq!(len_out, usize::MAX, "len_out written on failure");
    } else {
        check_buffer(result, &buf, len, len_out);
    }
    result
}

fuzz_target!(|input: Input| {
    let fx = fixture();

    check_name(mm_result_name(input.number));
    check_name(mm_state_name(input.number));

    // Options are checked before any thread starts: only the inputs that
    // would start a manager (device "cpu", a valid dtype) skip the call.
    let device = c_string(&input.device);
    let starts_threads = device
        .to_str()
        .is_ok_and(|d| d.trim().eq_ignore_ascii_case("cpu"))
        && [MM_DTYPE_KEEP, 5, 6, 7].contains(&input.dtype);
    if input.new_manager && !starts_threads {
        let mut options = std::mem::MaybeUninit::<mm_manager_options>::uninit();
        // SAFETY: a writable options struct.
        assert_eq!(
            unsafe { mm_manager_options_init(options.as_mut_ptr()) },
            mm_result::Ok
        );
        // SAFETY: initialised by the call above.
        let mut options = unsafe { options.assume_init() };
        options.device = device.as_ptr();
        options.memory_budget = input.memory_budget;
        options.chunk_size = usize::from(input.chunk_size);
        options.read_threads = usize::from(input.read_threads);
        options.dtype = input.dtype;
        let mut manager = ptr::null_mut();
        // SAFETY: valid options (device NUL-terminated) and out-param.
        let result = unsafe { mm_manager_new(&options, &mut manager) };
        assert_ne!(result, mm_result::Panic);
        if result == mm_result::Ok {
            // SAFETY: a manager just created, used by no one else.
            assert_eq!(unsafe { mm_manager_destroy(manager) }, mm_result::Ok);
        } else {
            assert!(manager.is_null(), "out-param written on failure");
        }
    }

    if input.load {
        // Under the scratch folder: `..` is defused so nothing outside is
        // scanned.
        let rel = String::from_utf8_lossy(c_string(&input.path).as_bytes()).replace("..", "__");
        let path = CString::new(format!("{}/{rel}", fx.dir.display())).unwrap();
        // SAFETY: a live manager and a NUL-terminated path.
        let result = unsafe { mm_manager_load(fx.loader, path.as_ptr(), None, ptr::null_mut()) };
        assert_ne!(result, mm_result::Panic);
        let mut state = mm_state::Idle;
        // SAFETY: a live manager, a writable state.
        let waited = unsafe { mm_manager_wait(fx.loader, 10_000, &mut state) };
        assert_eq!(waited, mm_result::Ok, "the load settled");
        assert!(
            matches!(state, mm_state::Ready | mm_state::Failed | mm_state::Idle),
            "{state:?}"
        );
        if state == mm_state::Failed {
            call_with_buffer(
                input.message_len,
                input.message_null_buf,
                |buf, len, out| {
                    // SAFETY: `buf` NULL or writable for `len`; `out` writable.
                    unsafe { mm_manager_error_message(fx.loader, buf, len, out) }
                },
            );
        }
    }

    let key = input.key.as_deref().map(c_string);
    call_with_buffer(input.config_len, input.config_null_buf, |buf, len, out| {
        let key = key.as_ref().map_or(ptr::null(), |k| k.as_ptr());
        // SAFETY: a live manager; key NULL or NUL-terminated; `buf` NULL or
        // writable for `len`; `out` writable.
        unsafe { mm_manager_config(fx.ready, key, buf, len, out) }
    });

    call_with_buffer(
        input.message_len,
        input.message_null_buf,
        |buf, len, out| {
            // SAFETY: `buf` NULL or writable for `len`; `out` writable.
            unsafe { mm_last_error_message(buf, len, out) }
        },
    );

    let name = input.tensor.as_deref().map(c_string);
    let mut index = usize::MAX;
    let name_ptr = name.as_ref().map_or(ptr::null(), |n| n.as_ptr());
    // SAFETY: a live lease; name NULL or NUL-terminated; a writable index.
    let found = unsafe { mm_lease_tensor_find(fx.lease, name_ptr, &mut index) };
    assert_ne!(found, mm_result::Panic);
    let mut count = 0usize;
    // SAFETY: a live lease, a writable count.
    assert_eq!(
        unsafe { mm_lease_tensor_count(fx.lease, &mut count) },
        mm_result::Ok
    );
    if found == mm_result::Ok {
        assert!(index < count);
    } else {
        assert_eq!(index, usize::MAX, "index_out written on failure");
    }
    let index = if found == mm_result::Ok {
        index
    } else {
        input.index
    };
    let mut tensor_name: *const c_char = ptr::null();
    // SAFETY: a live lease, a writable pointer.
    let named = unsafe { mm_lease_tensor_name(fx.lease, index, &mut tensor_name) };
    assert_eq!(named == mm_result::Ok, index < count, "{named:?}");
    if named == mm_result::Ok {
        check_name(tensor_name);
        let mut tensor = std::mem::MaybeUninit::<mm_tensor>::uninit();
        // SAFETY: a live lease, a writable tensor.
        let got = unsafe { mm_lease_tensor(fx.lease, index, tensor.as_mut_ptr()) };
        assert_eq!(got, mm_result::Ok);
        // SAFETY: written on success.
        let tensor = unsafe { tensor.assume_init() };
        assert_eq!(tensor.name, tensor_name);
    }
});
