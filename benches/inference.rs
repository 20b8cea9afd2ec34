//! Time to the first embedding: load a BERT-base-sized model (random
//! weights, 110 million parameters, 438 MB of F32) and embed two sentences,
//! through the manager (load to `Ready`, lease, forward pass) against
//! candle's own path (`VarBuilder::from_mmaped_safetensors`, `BertModel::
//! load`, the same forward pass), alternating, in one run:
//!
//! ```sh
//! cargo bench --bench inference          # 7 rounds each
//! MM_BENCH_ROUNDS=3 cargo bench --bench inference
//! ```
//!
//! The model is written once under the target directory; every round reads
//! it from the page cache.

#[path = "../examples/embed/bert.rs"]
#[allow(dead_code)]
mod bert;

use std::path::{Path, PathBuf};
use std::time::Instant;

use bert::{Batch, Bert, CLS, PAD, SEP};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use model_manager::candle_core::{DType, Device};
use model_manager::ModelManager;

fn rounds() -> usize {
    std::env::var("MM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

fn model_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-models").join("bert-base-random");
    if !dir.join("tokenizer.json").exists() {
        eprintln!("writing a BERT-base-sized model to {}", dir.display());
        bert::write_bert(&dir, 30522, 768, 12).expect("write the model");
    }
    dir
}

fn rows() -> Vec<Vec<u32>> {
    vec![
        vec![CLS, 4, 6, 8, 9, 10, 12, 24, 25, 26, 27, SEP],
        vec![CLS, 5, 7, 8, 9, 11, 30, 31, SEP],
    ]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Through the manager: (load to Ready, first embedding), in seconds.
fn manager_round(rt: &tokio::runtime::Runtime, dir: &Path) -> (f64, f64, Vec<f32>) {
    rt.block_on(async {
        let manager = ModelManager::builder().pipeline::<Bert>().build().unwrap();
        let start = Instant::now();
        manager.load(dir).unwrap().await.unwrap();
        let loaded = start.elapsed().as_secs_f64();
        let lease = manager.acquire().unwrap();
        let embedding = tokio::task::spawn_blocking(move || {
            let batch = Batch::new(&rows(), PAD, &lease.model.device).unwrap();
            let e = lease.embed(&batch).unwrap();
            e.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
        .await
        .unwrap();
        let first = start.elapsed().as_secs_f64();
        manager.shutdown().await;
        (loaded, first, embedding)
    })
}

/// The same load into the plain `TensorPipeline` (no model built), seconds.
fn tensors_round(rt: &tokio::runtime::Runtime, dir: &Path) -> f64 {
    rt.block_on(async {
        let manager = ModelManager::new().unwrap();
        let start = Instant::now();
        manager.load(dir).unwrap().await.unwrap();
        let loaded = start.elapsed().as_secs_f64();
        manager.shutdown().await;
        loaded
    })
}

/// candle's own path: (model built, first embedding), in seconds.
fn candle_round(dir: &Path) -> (f64, f64, Vec<f32>) {
    let start = Instant::now();
    let config: Config =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    // SAFETY: the file is not modified while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let model = BertModel::load(vb, &config).unwrap();
    let loaded = start.elapsed().as_secs_f64();
    let bert = Bert {
        model,
        config,
        dtype: DType::F32,
    };
    let batch = Batch::new(&rows(), PAD, &Device::Cpu).unwrap();
    let e = bert.embed(&batch).unwrap();
    let embedding = e.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (loaded, start.elapsed().as_secs_f64(), embedding)
}

fn main() {
    let dir = model_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Warm the page cache and both code paths.
    let (_, _, ours) = manager_round(&rt, &dir);
    let (_, _, theirs) = candle_round(&dir);
    assert_eq!(ours, theirs, "the two paths embed alike");
    let (mut m_load, mut m_first, mut c_load, mut c_first) = (vec![], vec![], vec![], vec![]);
    let mut t_load = vec![];
    for _ in 0..rounds() {
        t_load.push(tensors_round(&rt, &dir));
        let (l, f, _) = manager_round(&rt, &dir);
        m_load.push(l);
        m_first.push(f);
        let (l, f, _) = candle_round(&dir);
        c_load.push(l);
        c_first.push(f);
    }
    let bytes = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len();
    let ms = |x: f64| x * 1e3;
    println!(
        "BERT-base-sized model ({:.0} MB F32), {} rounds each, medians:",
        bytes as f64 / 1e6,
        rounds()
    );
    println!(
        "  model-manager, tensors only (TensorPipeline): load {:>7.1} ms",
        ms(median(t_load))
    );
    println!(
        "  model-manager: load {:>7.1} ms, first embedding at {:>7.1} ms",
        ms(median(m_load.clone())),
        ms(median(m_first.clone()))
    );
    println!(
        "  candle mmap:   load {:>7.1} ms, first embedding at {:>7.1} ms",
        ms(median(c_load.clone())),
        ms(median(c_first.clone()))
    );
    println!(
        "  ratio (candle / model-manager): load {:.2}x, first embedding {:.2}x",
        median(c_load) / median(m_load),
        median(c_first) / median(m_first)
    );
}
