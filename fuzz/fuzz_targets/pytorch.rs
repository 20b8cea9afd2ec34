//! Arbitrary bytes as a PyTorch checkpoint in memory, mutated from real
//! `torch.save` archives (fuzz/corpus/pytorch): the zip directory, the
//! restricted unpickler and the tensor records must never panic, never
//! allocate beyond what the input justifies, and a checkpoint `inspect`
//! accepts must load to Ready or Failed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_manager::ModelSource;
use model_manager_fuzz::{inspect_and_load, LoadRefused};

fuzz_target!(|data: &[u8]| {
    inspect_and_load(ModelSource::bytes(data.to_vec()), LoadRefused::Never, data);
});
