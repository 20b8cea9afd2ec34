//! `load` and `inspect`.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use model_manager::candle_core::DType;
use model_manager::{DeviceSpec, Error, ModelManager, ModelSource, PageCache};

use crate::CliResult;

/// The load was cancelled by Ctrl-C.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// A Ctrl-C listener for the whole of a command: one listener (a fresh
/// `ctrl_c()` per turn could miss a signal between turns), installed when
/// called (a future polled for the first time only later would leave a
/// signal that came before to the default action, which ends the process
/// mid-load).
pub(crate) fn interrupted() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            interrupt.recv().await;
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The bar `load` and `pull` draw on a terminal.
pub(crate) fn progress_bar() -> Result<ProgressBar, indicatif::style::TemplateError> {
    Ok(ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
        )?
        .progress_chars("=> "),
    ))
}

pub async fn load(
    source: ModelSource,
    device: DeviceSpec,
    dtype: Option<DType>,
    page_cache: PageCache,
) -> CliResult {
    let mut builder = ModelManager::builder()
        .device(device)
        .page_cache(page_cache);
    if let Some(dtype) = dtype {
        builder = builder.dtype(dtype);
    }
    // Ctrl-C is caught from before the load starts to its end.
    let ctrl_c = interrupted()?;
    tokio::pin!(ctrl_c);
    let manager = builder.build()?;
    let started = Instant::now();
    let handle = manager.load(source.clone())?;
    let bar = progress_bar()?;
    let mut progress = handle.progress_updates();
    let outcome = loop {
        tokio::select! {
            outcome = handle.wait() => break outcome,
            changed = progress.changed() => {
                if changed.is_ok() {
                    let p = progress.borrow_and_update().clone();
                    if p.bytes_total == 0 && p.download_total > 0 {
                        // Downloading (--download), before the read.
                        bar.set_length(p.download_total);
                        bar.set_position(p.download_done);
                        bar.set_message(p.current.as_deref().unwrap_or("").to_string());
                    } else {
                        bar.set_length(p.bytes_total);
                        bar.set_position(p.bytes_done);
                        bar.set_message(format!("{}/{} tensors", p.tensors_done, p.tensors_total));
                    }
                }
            }
            _ = &mut ctrl_c => {
                manager.cancel().ok();
                bar.abandon_with_message("cancelling");
                let _ = handle.wait().await;
                manager.shutdown().await;
                return Err(Interrupted.into());
            }
        }
    };
    let elapsed = started.elapsed();
    match outcome {
        Ok(snapshot) => {
            bar.finish_and_clear();
            let p = snapshot.progress;
            println!("loaded {source} on {device}");
            if p.download_total > 0 {
                println!("  downloaded  {} bytes", p.download_total);
            }
            println!("  time        {:.3} s", elapsed.as_secs_f64());
            println!(
                "  throughput  {:.2} GB/s",
                p.bytes_total as f64 / elapsed.as_secs_f64() / 1e9
            );
            println!("  tensors     {}", p.tensors_total);
            println!(
                "  bytes       {} read, {} resident",
                p.bytes_total,
                manager.resident_bytes()
            );
            match manager.sample_size() {
                Some(s) => println!("  sample_size {s}"),
                None => println!("  sample_size (none in the config)"),
            }
            manager.shutdown().await;
            Ok(())
        }
        Err(e) => {
            bar.abandon();
            manager.shutdown().await;
            Err(e.into())
        }
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn inspect(source: &ModelSource, all: bool) -> CliResult {
    let summary = model_manager::inspect(source).map_err(|e: Error| Box::new(e))?;
    println!("{source}");
    println!(
        "  {} tensors, {} ({} bytes); sample_size {}",
        summary.tensors,
        human(summary.bytes),
        summary.bytes,
        summary
            .sample_size
            .map_or("none".to_string(), |s| s.to_string())
    );
    if let Some(config) = &summary.config {
        if let Some(class) = config.get("_class_name").and_then(|c| c.as_str()) {
            println!("  pipeline    {class}");
        }
    }
    for c in &summary.components {
        let bytes: u64 = c.tensors.iter().map(|t| t.bytes).sum();
        let mut dtypes: Vec<&str> = c.tensors.iter().map(|t| t.dtype.as_str()).collect();
        dtypes.sort_unstable();
        dtypes.dedup();
        if c.tensors.is_empty() {
            println!("  {:<16} no weights (recorded, not loaded)", c.name);
        } else {
            println!(
                "  {:<16} {:>6} tensors {:>10}  {}",
                c.name,
                c.tensors.len(),
                human(bytes),
                dtypes.join(",")
            );
        }
        if let Some(config) = &c.config {
            let text = config.to_string();
            let text = if text.chars().count() > 100 {
                format!("{}...", text.chars().take(97).collect::<String>())
            } else {
                text
            };
            println!("  {:<16} config {text}", "");
        }
        let shown = if all {
            c.tensors.len()
        } else {
            c.tensors.len().min(5)
        };
        for t in &c.tensors[..shown] {
            println!(
                "      {:<48} {:<5} {:<20} {:>10}",
                t.name,
                t.dtype,
                format!("{:?}", t.shape),
                human(t.bytes)
            );
        }
        if shown < c.tensors.len() {
            println!(
                "      ... {} more (--all to list them)",
                c.tensors.len() - shown
            );
        }
    }
    Ok(())
}
