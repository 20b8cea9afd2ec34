//! Sentence embeddings from a lease: load a BERT model folder through the
//! manager, embed two sentences on a blocking thread while holding a lease,
//! print their cosine similarity, unload.
//!
//! ```sh
//! cargo run --release --example embed                       # a small random BERT, no download
//! cargo run --release --example embed -- ~/models/all-MiniLM-L6-v2 "A cat sat." "A dog sat."
//! cargo run --release --features cuda --example embed -- --device cuda:0 MODEL_DIR
//! ```
//!
//! A model folder holds `config.json` (a BERT config), `model.safetensors`
//! and `tokenizer.json`, as sentence-transformers publishes them (for
//! example `sentence-transformers/all-MiniLM-L6-v2`). Without a folder the
//! example writes a small BERT with random weights to a temporary folder:
//! the path is the real one, the similarity is meaningless.

mod bert;

use std::path::PathBuf;

use bert::{cosine, Batch, Bert};
use model_manager::{DeviceSpec, Error, ModelManager};
use tokenizers::Tokenizer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let device: DeviceSpec = match args.iter().position(|a| a == "--device") {
        Some(i) if i + 1 < args.len() => {
            let spec = args.remove(i + 1);
            args.remove(i);
            spec.parse()?
        }
        Some(_) => return Err("--device needs a value (cpu, cuda:N, metal)".into()),
        None => DeviceSpec::Cpu,
    };
    let scratch;
    let folder = match args.first() {
        Some(folder) => PathBuf::from(folder),
        None => {
            scratch = tempfile::tempdir()?;
            let folder = scratch.path().join("small-bert");
            bert::write_small_bert(&folder)?;
            println!("no model folder given: a small BERT with random weights (the similarity is meaningless)");
            folder
        }
    };
    let a = args
        .get(1)
        .map_or("The cat sat on the mat.", String::as_str)
        .to_string();
    let b = args
        .get(2)
        .map_or("A dog sat on the rug.", String::as_str)
        .to_string();

    let manager: ModelManager<Bert> = ModelManager::builder()
        .device(device)
        .pipeline::<Bert>()
        .build()?;
    let started = std::time::Instant::now();
    manager.load(&folder)?.await?;
    println!(
        "loaded {} in {:.1} ms on {device} ({} bytes resident)",
        folder.display(),
        started.elapsed().as_secs_f64() * 1e3,
        manager.resident_bytes()
    );

    println!("weights in {:?}", manager.acquire()?.dtype);
    let tokenizer = Tokenizer::from_file(folder.join("tokenizer.json"))
        .map_err(|e| format!("{}: {e}", folder.join("tokenizer.json").display()))?;
    let lease = manager.acquire()?;
    // Inference is blocking work: off the async runtime, holding the lease
    // (an unload requested meanwhile waits for it).
    let similarity = tokio::task::spawn_blocking(move || -> Result<f32, Error> {
        let rows = [a.as_str(), b.as_str()]
            .iter()
            .map(|s| tokenizer.encode(*s, true).map(|e| e.get_ids().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let pad = lease.config.pad_token_id as u32;
        let batch = Batch::new(&rows, pad, &lease.model.device)?;
        let embeddings = lease.embed(&batch)?;
        Ok(cosine(&embeddings, 0, 1)?)
    })
    .await??;
    println!(
        "cosine similarity: {similarity:.4} ({:.1} ms from the start of the load)",
        started.elapsed().as_secs_f64() * 1e3
    );

    manager.unload().await?;
    println!("unloaded: {} bytes resident", manager.resident_bytes());
    manager.shutdown().await;
    Ok(())
}
