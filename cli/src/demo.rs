//! The demo: a small diffusers-layout pipeline written to a temp folder, then
//! a load with a progress bar and every transition printed, the
//! `sample_size`, a computation on the loaded weights, a cancel in the middle
//! of a second load, a switch between two models, and the memory returned;
//! then a pool of three pipelines under a budget for two: an eviction, a
//! keep-alive expiry and a hot reload with a lease held across it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use model_manager::candle_core::{DType, Device, Tensor};
use model_manager::{Error, LoadHandle, ModelManager, State};
use serde_json::json;

use crate::CliResult;

fn save(dir: &Path, file: &str, tensors: &[(&str, &[usize])]) -> CliResult {
    std::fs::create_dir_all(dir)?;
    let mut map = HashMap::new();
    for (name, shape) in tensors {
        map.insert(
            name.to_string(),
            Tensor::randn(0f32, 0.05, *shape, &Device::Cpu)?,
        );
    }
    model_manager::candle_core::safetensors::save(&map, dir.join(file))?;
    Ok(())
}

fn json_file(path: &Path, value: serde_json::Value) -> CliResult {
    std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
    std::fs::write(path, serde_json::to_string_pretty(&value)?)?;
    Ok(())
}

/// A diffusers pipeline: `model_index.json`; `unet/` (config with
/// `sample_size`, weights); `vae/`; a sharded `text_encoder/`; a `scheduler/`
/// and a `tokenizer/` without weights. `width` scales every matrix.
pub fn write_pipeline(
    root: &Path,
    width: usize,
    sample_size: u64,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    json_file(
        &root.join("model_index.json"),
        json!({
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.30.0",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "safety_checker": [null, null]
        }),
    )?;
    json_file(
        &root.join("unet/config.json"),
        json!({"sample_size": sample_size, "in_channels": 4, "block_out_channels": [width]}),
    )?;
    let unet = root.join("unet");
    save(
        &unet,
        "diffusion_pytorch_model.safetensors",
        &[
            ("conv_in.weight", &[width, 4]),
            ("down_blocks.0.proj.weight", &[width, width]),
            ("mid_block.proj.weight", &[width, width]),
            ("up_blocks.0.proj.weight", &[width, width]),
            ("conv_out.weight", &[4, width]),
        ],
    )?;
    json_file(
        &root.join("vae/config.json"),
        json!({"sample_size": sample_size * 8, "latent_channels": 4}),
    )?;
    save(
        &root.join("vae"),
        "diffusion_pytorch_model.safetensors",
        &[("decoder.proj.weight", &[width, width])],
    )?;
    let te = root.join("text_encoder");
    json_file(
        &te.join("config.json"),
        json!({"hidden_size": width, "num_hidden_layers": 2}),
    )?;
    save(
        &te,
        "model-00001-of-00002.safetensors",
        &[("layers.0.weight", &[width, width])],
    )?;
    save(
        &te,
        "model-00002-of-00002.safetensors",
        &[("layers.1.weight", &[width, width])],
    )?;
    json_file(
        &te.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": {
            "layers.0.weight": "model-00001-of-00002.safetensors",
            "layers.1.weight": "model-00002-of-00002.safetensors"
        }}),
    )?;
    json_file(
        &root.join("scheduler/scheduler_config.json"),
        json!({"num_train_timesteps": 1000}),
    )?;
    json_file(
        &root.join("tokenizer/vocab.json"),
        json!({"<|endoftext|>": 0}),
    )?;
    Ok(root.to_path_buf())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Resident set size of this process, in bytes (Linux).
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

async fn with_progress_bar(
    handle: &LoadHandle,
    label: &str,
) -> Result<model_manager::Snapshot, Error> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("  {msg:12} [{bar:40}] {bytes}/{total_bytes}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    let mut progress = handle.progress_updates();
    let outcome = loop {
        tokio::select! {
            outcome = handle.wait() => break outcome,
            changed = progress.changed() => {
                if changed.is_ok() {
                    let p = progress.borrow_and_update().clone();
                    bar.set_length(p.bytes_total);
                    bar.set_position(p.bytes_done);
                }
            }
        }
    };
    if let Ok(s) = &outcome {
        bar.set_length(s.progress.bytes_total);
        bar.set_position(s.progress.bytes_done);
    }
    bar.finish();
    outcome
}

pub async fn run() -> CliResult {
    let dir = std::env::temp_dir().join(format!("model-manager-demo-{}", std::process::id()));
    let result = run_in(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path) -> CliResult {
    println!(
        "model-manager demo: two small diffusers pipelines in {}",
        dir.display()
    );
    let sd = write_pipeline(&dir.join("tiny-sd"), 1024, 64)?; // ~26 MiB
    let xl = write_pipeline(&dir.join("tiny-sd-xl"), 1536, 128)?; // ~59 MiB
    let sd2 = write_pipeline(&dir.join("tiny-sd-2"), 1024, 64)?; // ~26 MiB

    let manager = ModelManager::builder().chunk_size(1 << 20).build()?;
    let mut events = manager.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            let model = e
                .snapshot
                .model
                .as_ref()
                .map(|m| {
                    let name = Path::new(&m.to_string())
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned());
                    format!(" [{}]", name.unwrap_or_default())
                })
                .unwrap_or_default();
            println!(
                "  event #{:<2} {:>9} -> {:<9} ({}){model}",
                e.snapshot.generation,
                e.from.to_string(),
                e.to.to_string(),
                e.command
            );
        }
    });
    let rss_start = rss();

    println!("\n1. load tiny-sd");
    let started = Instant::now();
    let snapshot = with_progress_bar(&manager.load(&*sd)?, "tiny-sd").await?;
    tokio::task::yield_now().await;
    println!(
        "  ready in {:.1} ms: {} tensors, {:.1} MiB resident, sample_size = {:?}",
        started.elapsed().as_secs_f64() * 1e3,
        snapshot.progress.tensors_total,
        mib(manager.resident_bytes()),
        manager.sample_size()
    );

    println!("\n2. lease it and run the unet's projections on a latent");
    {
        let lease = manager.acquire()?;
        let components: Vec<String> = lease
            .components()
            .iter()
            .map(|c| format!("{}({})", c.name(), c.tensors().count()))
            .collect();
        println!("  components: {}", components.join(" "));
        let sample = manager.sample_size().unwrap_or(8) as usize;
        let latent = Tensor::randn(0f32, 1.0, (sample * sample / 64, 4), &Device::Cpu)?;
        let mut h = latent.matmul(&lease.tensor("unet/conv_in.weight").ok_or("conv_in")?.t()?)?;
        for block in ["down_blocks.0", "mid_block", "up_blocks.0"] {
            let w = lease
                .tensor(&format!("unet/{block}.proj.weight"))
                .ok_or("block")?;
            h = (h.matmul(&w.t()?)?.gelu()? + &h)?;
        }
        let out = h.matmul(
            &lease
                .tensor("unet/conv_out.weight")
                .ok_or("conv_out")?
                .t()?,
        )?;
        let std: f32 = out
            .to_dtype(DType::F32)?
            .sqr()?
            .mean_all()?
            .sqrt()?
            .to_scalar()?;
        println!(
            "  unet(latent {:?}) -> {:?}, rms {std:.4}; leases held: {}",
            latent.dims(),
            out.dims(),
            manager.outstanding_leases()
        );
    }

    println!("\n3. start loading tiny-sd-xl and cancel it half-way");
    tokio::task::yield_now().await;
    let handle = manager.load(&*xl)?;
    let mut progress = handle.progress_updates();
    let _ = progress
        .wait_for(|p| p.bytes_total > 0 && p.bytes_done * 2 >= p.bytes_total)
        .await;
    let at = handle.progress();
    manager.cancel()?;
    match handle.await {
        Err(Error::Cancelled) => println!(
            "  cancelled at {:.1}/{:.1} MiB; state {}; resident {:.1} MiB (the partial tensors are freed)",
            mib(at.bytes_done),
            mib(at.bytes_total),
            manager.current_state(),
            mib(manager.resident_bytes())
        ),
        other => println!("  the load ended before the cancel: {other:?}"),
    }

    println!("\n4. switch: load tiny-sd, then tiny-sd-xl (latest request wins: unload, then load)");
    tokio::time::sleep(Duration::from_millis(10)).await;
    manager.load(&*sd)?.await?;
    with_progress_bar(&manager.load(&*xl)?, "tiny-sd-xl").await?;
    tokio::task::yield_now().await;
    println!(
        "  now {} with sample_size = {:?}; resident {:.1} MiB",
        manager.current_state(),
        manager.sample_size(),
        mib(manager.resident_bytes())
    );

    println!("\n5. unload and show the memory returned");
    let (resident, rss_loaded) = (manager.resident_bytes(), rss());
    manager.unload().await?;
    tokio::task::yield_now().await;
    println!(
        "  model memory: {:.1} MiB -> {:.1} MiB; state {}",
        mib(resident),
        mib(manager.resident_bytes()),
        manager.current_state()
    );
    if let (Some(start), Some(loaded), Some(now)) = (rss_start, rss_loaded, rss()) {
        println!(
            "  process RSS: {:.1} MiB before loading, {:.1} MiB loaded, {:.1} MiB after unload",
            mib(start),
            mib(loaded),
            mib(now)
        );
    }
    assert_eq!(manager.current_state(), State::Idle);

    manager.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    println!("\nshut down: every task and thread the manager started is joined");

    crate::pool::demo(&sd, &xl, &sd2).await?;
    println!("\nthe pool shut down: every model freed, every task joined");
    Ok(())
}
