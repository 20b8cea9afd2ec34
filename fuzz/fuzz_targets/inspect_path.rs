//! A model folder (decoded as for `folder`) written to disk and inspected
//! from its path: the on-disk side (name checks against the folder, opening
//! files, reading JSON) must return, never panic. Every folder `inspect`
//! accepts, and one in four it refuses, is then loaded from disk with
//! direct I/O (`PageCache::Bypass`), with the checks of `folder`. One
//! folder per process, emptied for every input.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use model_manager::{ModelSource, PageCache};
use model_manager_fuzz::{decode, inspect_and_load_with, safe_relative, LoadRefused};

fn scratch() -> &'static (tempfile::TempDir, PathBuf) {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        // tmpfs where there is one: no disk writes per input.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temp dir");
        let model = dir.path().join("model");
        (dir, model)
    })
}

fuzz_target!(|data: &[u8]| {
    let files = decode(data);
    let (_, model) = scratch();
    let _ = std::fs::remove_dir_all(model);
    std::fs::create_dir_all(model).expect("the scratch folder");
    for (name, contents) in &files {
        let Some(rel) = safe_relative(name) else {
            continue;
        };
        let path = model.join(rel);
        if let Some(parent) = path.parent() {
            if std::fs::create_dir_all(parent).is_err() {
                continue;
            }
        }
        // A name may be both a file and a folder: the first one wins.
        let _ = std::fs::write(&path, contents);
    }
    inspect_and_load_with(
        ModelSource::path(model),
        LoadRefused::OneIn(4),
        data,
        PageCache::Bypass,
    );
});
