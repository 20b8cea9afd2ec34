//! Alone in its own process: measures the process's resident memory.
mod common;

fn rss_mib() -> f64 {
    common::rss_kib() as f64 / 1024.0
}

/// Many small files (each under glibc's 32 MiB mmap ceiling, so their
/// tensors come from the heap): unload must still hand the memory back.
#[test]
fn unload_returns_memory_to_the_os() {
    let dir = tempfile::tempdir().unwrap();
    // Two pipelines of eight 8 MiB components: 64 MiB each.
    let models: Vec<_> = (0..2u32)
        .map(|i| {
            let root = dir.path().join(format!("p{i}"));
            let mut index = serde_json::Map::new();
            for c in 0..8 {
                let name = format!("c{c}");
                common::write_model(&root, &name, i, 2, 1 << 20);
                index.insert(name, serde_json::json!(["diffusers", "Model"]));
            }
            std::fs::write(
                root.join("model_index.json"),
                serde_json::Value::Object(index).to_string(),
            )
            .unwrap();
            root
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let manager = model_manager::ModelManager::new().unwrap();
        // Warm up: allocator, runtime and page tables reach their steady size.
        manager.load(&*models[0]).unwrap().await.unwrap();
        manager.unload().await.unwrap();
        let baseline = rss_mib();
        for round in 0..6 {
            manager.load(&*models[round % 2]).unwrap().await.unwrap();
            let loaded = rss_mib();
            assert!(
                loaded > baseline + 48.0,
                "the model is resident: {loaded:.1} MiB"
            );
            manager.unload().await.unwrap();
            let after = rss_mib();
            // Without returning freed pages, 56 of the 64 MiB stay (measured);
            // allow for thread arenas and stacks, well short of that.
            assert!(
                after < baseline + 24.0,
                "round {round}: {after:.1} MiB after unload vs {baseline:.1} MiB before"
            );
        }
        manager.shutdown().await;
    });
}
