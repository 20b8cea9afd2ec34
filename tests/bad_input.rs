mod common;

use common::write_model;
use model_manager::{Error, ErrorCode, ModelManager, State};

#[tokio::test]
async fn corrupt_then_retry_with_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_model(dir.path(), "good", 1, 3, 10_000);
    let bytes = std::fs::read(good.join("model.safetensors")).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a model").unwrap();
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.safetensors");

    let manager = ModelManager::new().unwrap();
    for (path, code) in [
        (&truncated, ErrorCode::InvalidModel),
        (&garbage, ErrorCode::InvalidModel),
        (&empty, ErrorCode::InvalidModel),
        (&missing, ErrorCode::MissingFile),
    ] {
        let err = manager.load(path).unwrap().await.unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.to_string().contains(name), "{err} names the file");
        let snap = manager.snapshot();
        assert_eq!(snap.state, State::Failed);
        assert_eq!(snap.error, Some(err));
        assert_eq!(manager.resident_bytes(), 0);
    }
    let err = manager.snapshot().error.unwrap();
    assert!(matches!(err, Error::MissingFile { .. }));

    manager.load(&*good).unwrap().await.unwrap();
    assert_eq!(manager.current_state(), State::Ready);
    common::verify(&manager.acquire().unwrap(), 1);
    manager.shutdown().await;
}

#[tokio::test]
async fn truncated_data_is_reported_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_model(dir.path(), "good", 1, 3, 10_000);
    let bytes = std::fs::read(good.join("model.safetensors")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let manager = ModelManager::new().unwrap();
    let err = manager.load(&*cut).unwrap().await.unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    manager.shutdown().await;
}
