//! The hub cache: repos and revisions that are not in it, and refs that are
//! not files. One test, the only one here that sets `HF_HUB_CACHE` and
//! `HF_HOME` (the environment is the process's).

use std::path::Path;

use model_manager::{Error, ErrorCode, ModelSource};

use super::{fifo, good_tensor_header, raw, BOUND};

/// `inspect(source)`'s error, or the end of the test process if it hangs.
fn refused(source: ModelSource) -> Error {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(model_manager::inspect(&source)));
    let Ok(result) = rx.recv_timeout(BOUND) else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "hub inspect: hung for {BOUND:?}");
        std::process::exit(101);
    };
    result.unwrap_err()
}

fn says(err: &Error, code: ErrorCode, words: &[&str]) {
    assert_eq!(err.code(), code, "{err}");
    for word in words {
        assert!(
            err.to_string().contains(word),
            "{err:?} should say {word:?}"
        );
    }
}

/// `acme/tiny` in the cache at `cache`: `refs/main` names commit `abc123`,
/// whose snapshot holds a model; `refs/v1` names a commit not there.
fn tiny(cache: &Path) {
    let repo = cache.join("models--acme--tiny");
    let snapshot = repo.join("snapshots").join("abc123");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(
        snapshot.join("model.safetensors"),
        raw(good_tensor_header(), 16),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "abc123").unwrap();
    std::fs::write(repo.join("refs").join("v1"), "dead00").unwrap();
}

#[test]
fn the_hub_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    let cache_text = cache.display().to_string();
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", dir.path());

    // A repo not in the cache: which cache, chosen how, how to fetch it.
    let err = refused(ModelSource::hub("acme/absent"));
    says(
        &err,
        ErrorCode::MissingFile,
        &[
            "models--acme--absent",
            "the hub repo acme/absent is not in the cache at",
            &cache_text,
            "(set by HF_HOME)",
            "without the download switch model-manager reads the cache only",
            "`model-manager pull acme/absent`",
            "ModelSource::hub(\"acme/absent\").download()",
            "`hf download acme/absent`",
            "`huggingface-cli download acme/absent`",
            "HF_HUB_CACHE (or HF_HOME)",
        ],
    );
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound));
    std::env::set_var("HF_HUB_CACHE", &cache);
    let err = refused(ModelSource::hub_revision("acme/absent", "v2"));
    says(
        &err,
        ErrorCode::MissingFile,
        &[
            "(set by HF_HUB_CACHE)",
            "hf download acme/absent --revision v2",
            "`model-manager pull acme/absent@v2`",
        ],
    );

    // A revision not in the cache: the revisions that are.
    tiny(&cache);
    model_manager::inspect(&ModelSource::hub("acme/tiny")).expect("main is cached");
    says(
        &refused(ModelSource::hub_revision("acme/tiny", "v9")),
        ErrorCode::MissingFile,
        &[
            "revision v9 of acme/tiny is not in the hub cache",
            "refs: main, v1",
            "snapshots: abc123/",
            "`hf download acme/tiny --revision v9`",
        ],
    );
    // A ref naming a commit whose snapshot is gone.
    says(
        &refused(ModelSource::hub_revision("acme/tiny", "v1")),
        ErrorCode::MissingFile,
        &[
            "refs/v1 of acme/tiny names commit dead00",
            "whose snapshot is not in the cache",
            "hf download acme/tiny --revision v1",
        ],
    );

    // `refs/main` a FIFO, then `/dev/zero`: refused as not a regular file,
    // without blocking or reading without end.
    let refs = cache.join("models--acme--tiny").join("refs").join("main");
    std::fs::remove_file(&refs).unwrap();
    fifo(&refs);
    let err = refused(ModelSource::hub("acme/tiny"));
    says(
        &err,
        ErrorCode::InvalidConfig,
        &["not a regular file", "refs/main"],
    );
    std::fs::remove_file(&refs).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &refs).unwrap();
    says(
        &refused(ModelSource::hub("acme/tiny")),
        ErrorCode::InvalidConfig,
        &["not a regular file"],
    );
}
