//! The translation exercised through the exported functions, as C calls
//! them, on small models written by the tests.
//!
//! One concept per file, as in `manager/`: `lifecycle` (a whole lifecycle,
//! destroy), `load` (failures, switching, cancel), `subscription`,
//! `options`, `pool` (the model pool), and `null_args`. The helpers they
//! share are here.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr;
use std::sync::{Arc, Mutex};

use crate::*;

mod lifecycle;
mod load;
mod null_args;
mod options;
mod pool;
mod subscription;

/// Write a model folder: `model.safetensors` with `tensors` f32 tensors of
/// `elems` elements each (tensor `t` holds `t*1000 + i`), and a config.
fn write_model(dir: &Path, tensors: usize, elems: usize, sample_size: u64) {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for t in 0..tensors {
        let start = data.len();
        for i in 0..elems {
            data.extend_from_slice(&((t * 1000 + i) as f32).to_le_bytes());
        }
        if t > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"t{t}\":{{\"dtype\":\"F32\",\"shape\":[{elems}],\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), file).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!("{{\"sample_size\":{sample_size},\"scheduler\":\"DDIM\",\"dims\":[1,2]}}"),
    )
    .unwrap();
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn path_c(p: &Path) -> CString {
    c(p.to_str().unwrap())
}

fn last_message() -> String {
    let mut buf = [0 as c_char; 512];
    let mut len = 0;
    // SAFETY: a live buffer and a live usize.
    let r = unsafe { mm_last_error_message(buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(r, mm_result::Ok);
    // SAFETY: NUL-terminated by the call.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

struct Manager(*mut mm_manager);

impl Manager {
    fn new(chunk_size: usize) -> Self {
        // SAFETY: live locals; the handle is destroyed in Drop.
        unsafe {
            let mut options = std::mem::zeroed();
            assert_eq!(mm_manager_options_init(&mut options), mm_result::Ok);
            options.chunk_size = chunk_size;
            options.drain_timeout_ms = 200;
            let mut manager = ptr::null_mut();
            assert_eq!(mm_manager_new(&options, &mut manager), mm_result::Ok);
            Manager(manager)
        }
    }

    fn wait(&self) -> mm_state {
        let mut state = mm_state::Failed;
        // SAFETY: a live manager and a live local.
        let r = unsafe { mm_manager_wait(self.0, 10_000, &mut state) };
        assert_eq!(r, mm_result::Ok);
        state
    }

    fn load(&self, path: &Path) {
        let path = path_c(path);
        // SAFETY: a live manager and a live string.
        let r = unsafe { mm_manager_load(self.0, path.as_ptr(), None, ptr::null_mut()) };
        assert_eq!(r, mm_result::Ok);
    }

    /// Start loading `path` with `on_done` as its load callback, which
    /// records the outcome in what this returns (keep it until the manager
    /// is destroyed: the callback runs at the latest then).
    fn load_reporting(&self, path: &Path) -> Arc<Outcomes> {
        let outcomes: Arc<Outcomes> = Arc::default();
        let path = path_c(path);
        let userdata = Arc::as_ptr(&outcomes) as *mut c_void;
        // SAFETY: a live manager, string, callback and userdata.
        let r = unsafe { mm_manager_load(self.0, path.as_ptr(), Some(on_done), userdata) };
        assert_eq!(r, mm_result::Ok);
        outcomes
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // SAFETY: the handle from `mm_manager_new`, destroyed once.
        assert_eq!(unsafe { mm_manager_destroy(self.0) }, mm_result::Ok);
    }
}

type Outcomes = Mutex<Vec<(mm_result, mm_state, String)>>;

unsafe extern "C" fn on_done(
    userdata: *mut c_void,
    result: mm_result,
    snapshot: *const mm_snapshot,
) {
    // SAFETY: the test passes a live `Arc<Outcomes>` pointer and the library a
    // live snapshot.
    let (outcomes, snapshot) = unsafe { (&*(userdata as *const Outcomes), &*snapshot) };
    let message = if result == mm_result::Ok {
        String::new()
    } else {
        last_message()
    };
    outcomes
        .lock()
        .unwrap()
        .push((result, snapshot.state, message));
}

/// The static strings: no pointer argument, nothing to free.
#[test]
fn version_and_state_names() {
    // SAFETY: static NUL-terminated strings.
    unsafe {
        assert_eq!(
            CStr::from_ptr(mm_version()).to_str(),
            Ok(env!("CARGO_PKG_VERSION"))
        );
        // The names C has always had, now the core's table itself.
        let names = ["idle", "loading", "ready", "unloading", "failed"];
        for (state, name) in model_manager::State::ALL.into_iter().zip(names) {
            let ptr = mm_state_name(state as u32);
            assert_eq!(ptr, state.c_name().as_ptr(), "{state:?}: the core's string");
            assert_eq!(CStr::from_ptr(ptr).to_str(), Ok(name));
        }
        assert_eq!(CStr::from_ptr(mm_state_name(5)).to_str(), Ok("unknown"));
        assert_eq!(
            CStr::from_ptr(mm_state_name(u32::MAX)).to_str(),
            Ok("unknown")
        );
    }
}
