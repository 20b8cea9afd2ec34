//! A model folder in memory (decoded from the input: see the crate docs):
//! `inspect` must return; every folder it accepts, and one in four it
//! refuses, is loaded through a manager with a 64 MiB budget, which must end
//! Ready or Failed, agreeing with `inspect`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_manager::ModelSource;
use model_manager_fuzz::{decode, inspect_and_load, LoadRefused};

fuzz_target!(|data: &[u8]| {
    let files = decode(data);
    inspect_and_load(ModelSource::files(files), LoadRefused::OneIn(4), data);
});
