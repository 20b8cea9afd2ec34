//! Arbitrary bytes as one safetensors file in memory: `inspect` must return
//! (never panic), and a file it accepts must load to Ready or Failed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_manager::ModelSource;
use model_manager_fuzz::{inspect_and_load, LoadRefused};

fuzz_target!(|data: &[u8]| {
    inspect_and_load(ModelSource::bytes(data.to_vec()), LoadRefused::Never, data);
});
