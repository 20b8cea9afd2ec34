//! The demo: a tiny model written to a temp folder, then load with progress,
//! every transition printed, a lease and a computation, a cancel in the middle
//! of a load, a switch between two models, unload and the memory returned.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use model_manager::candle_core::{DType, Device, Tensor};
use model_manager::{Error, ModelManager, State};

type DemoResult = Result<(), Box<dyn std::error::Error>>;

/// Write a model folder: `config.json` (with `sample_size`) and
/// `model.safetensors` holding `layers` random f32 matrices of `dim`×`dim`.
pub fn write_model(
    dir: &Path,
    name: &str,
    layers: usize,
    dim: usize,
    sample_size: u64,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder)?;
    let mut tensors = HashMap::new();
    for i in 0..layers {
        let w = Tensor::randn(0f32, 0.02, (dim, dim), &Device::Cpu)?;
        tensors.insert(format!("layers.{i}.weight"), w);
    }
    model_manager::candle_core::safetensors::save(&tensors, folder.join("model.safetensors"))?;
    std::fs::write(
        folder.join("config.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "model_type": "demo-mlp",
            "hidden_size": dim,
            "num_layers": layers,
            "sample_size": sample_size,
        }))?,
    )?;
    Ok(folder)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

pub async fn run() -> DemoResult {
    let dir = std::env::temp_dir().join(format!("model-manager-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path) -> DemoResult {
    println!("writing two small models to {}", dir.display());
    let a = write_model(dir, "mlp-a", 8, 1024, 64)?; // 32 MiB
    let b = write_model(dir, "mlp-b", 4, 1024, 128)?; // 16 MiB

    let manager = ModelManager::builder().chunk_size(1 << 20).build()?;
    let mut events = manager.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            let model = e
                .snapshot
                .model
                .as_ref()
                .map(|m| {
                    format!(
                        " [{}]",
                        Path::new(&m.to_string())
                            .file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                    )
                })
                .unwrap_or_default();
            let why = e
                .snapshot
                .error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            println!(
                "  transition #{:<2} {:>9} -> {:<9} on {}{model}{why}",
                e.snapshot.generation,
                e.from.to_string(),
                e.to.to_string(),
                e.command
            );
        }
    });

    println!("\n1. load mlp-a with progress");
    let started = Instant::now();
    let handle = manager.load(&*a)?;
    let mut progress = handle.progress_updates();
    let mut last_decile = None;
    loop {
        tokio::select! {
            outcome = handle.wait() => { outcome?; break; }
            changed = progress.changed() => {
                if changed.is_err() { continue; }
                let p = progress.borrow_and_update().clone();
                let decile = (p.fraction() * 10.0) as u32;
                if last_decile != Some(decile) {
                    last_decile = Some(decile);
                    println!("  progress {:>5.1}%  {:>5.1}/{:.1} MiB  {}/{} tensors", p.fraction() * 100.0, mib(p.bytes_done), mib(p.bytes_total), p.tensors_done, p.tensors_total);
                }
            }
        }
    }
    println!(
        "  ready in {:.1} ms; sample_size = {:?}; resident {:.1} MiB",
        started.elapsed().as_secs_f64() * 1e3,
        manager.sample_size(),
        mib(manager.resident_bytes())
    );

    println!("\n2. lease the model and run a forward pass on its weights");
    {
        let lease = manager.acquire()?;
        let mut x = Tensor::ones((1, 1024), DType::F32, &Device::Cpu)?;
        for i in 0..8 {
            let w = lease
                .tensor(&format!("layers.{i}.weight"))
                .ok_or("missing layer")?;
            x = x.matmul(&w.t()?)?.tanh()?;
        }
        let norm: f32 = x.sqr()?.sum_all()?.sqrt()?.to_scalar()?;
        println!(
            "  |mlp(ones)| = {norm:.4} (with {} lease held)",
            manager.outstanding_leases()
        );
    }

    println!("\n3. switch to mlp-b (latest request wins: unload a, then load b)");
    manager.load(&*b)?.await?;
    println!(
        "  sample_size = {:?}; resident {:.1} MiB",
        manager.sample_size(),
        mib(manager.resident_bytes())
    );

    println!("\n4. start loading mlp-a again and cancel it half-way");
    let handle = manager.load(&*a)?;
    let mut progress = handle.progress_updates();
    let _ = progress.wait_for(|p| p.state_bytes_half()).await;
    manager.cancel()?;
    let cancelled_at = manager.snapshot();
    match handle.await {
        Err(Error::Cancelled) => println!(
            "  cancelled; state {}; resident {:.1} MiB",
            cancelled_at.state,
            mib(manager.resident_bytes())
        ),
        other => println!("  the load ended before the cancel: {other:?}"),
    }

    println!("\n5. load mlp-b, then unload and show the memory returned");
    manager.load(&*b)?.await?;
    let before = manager.resident_bytes();
    manager.unload().await?;
    println!(
        "  unloaded: {:.1} MiB -> {:.1} MiB resident; state {}",
        mib(before),
        mib(manager.resident_bytes()),
        manager.current_state()
    );
    assert_eq!(manager.current_state(), State::Idle);

    manager.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    println!("\nshut down: every task and thread joined");
    Ok(())
}

trait HalfWay {
    fn state_bytes_half(&self) -> bool;
}

impl HalfWay for model_manager::Progress {
    fn state_bytes_half(&self) -> bool {
        self.bytes_total > 0 && self.bytes_done * 2 >= self.bytes_total
    }
}
