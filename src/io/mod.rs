//! Everything that reads weights: what a source names ([`ModelSource`],
//! streams), how its files are laid out ([`plan`]), safetensors headers,
//! the hub cache, and the read engine that fills the tensors' buffers. It
//! knows nothing of the lifecycle: a read is handed a cancellation token,
//! progress counters and a memory reservation, and returns the tensors
//! (a [`TensorPipeline`](loaded::TensorPipeline)) or an error, having freed
//! what it read.
//!
//! May import: `resource` (reservations, budgets), `error`. Nothing from
//! `state`, `pipeline`, `loader`, `manager` or `pool`.
//!
//! Nothing here may panic on what a file or a caller hands it: unwrapping,
//! `expect` and unchecked indexing are denied in the whole layer.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub(crate) mod buffer;
pub(crate) mod cache;
pub(crate) mod direct;
pub(crate) mod download;
pub(crate) mod files;
mod hint;
mod hub;
mod inspect;
pub(crate) mod loaded;
mod located;
pub(crate) mod park;
pub(crate) mod plan;
pub(crate) mod progress;
mod pytorch;
pub(crate) mod read;
pub(crate) mod reader;
pub(crate) mod root;
pub(crate) mod safetensors;
pub(crate) mod source;
pub(crate) mod stream;

pub use cache::PageCache;
pub use download::{pull, Download, DEFAULT_ENDPOINT};
pub use inspect::{inspect, ComponentSummary, ModelSummary, TensorSummary};
pub use located::{tensor_data, DataError, TensorData};
pub use park::ParkedModel;
pub use read::ProgressHook;
pub use source::ModelSource;
pub use stream::{StreamSource, StreamWriter};

/// Default size of one read: progress and cancellation are checked this often.
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;

/// Default number of threads reading one file into host memory: the
/// available cores, at most 4 (always 1 on wasm32, which has no threads).
pub fn default_read_threads() -> usize {
    default_read_threads_for(crate::resource::DeviceSpec::Cpu)
}

/// Default number of threads reading one file for a device: the available
/// cores, at most 4 for host memory, at most 8 for CUDA, where each thread
/// also feeds copies to the device (8 was the fastest on an H200: the sweep
/// is in BENCHMARKS.md, "On a GPU"). Always 1 on wasm32, which has no
/// threads.
pub fn default_read_threads_for(device: crate::resource::DeviceSpec) -> usize {
    if cfg!(target_arch = "wasm32") {
        return 1;
    }
    let most = match device {
        crate::resource::DeviceSpec::Cuda(_) => 8,
        crate::resource::DeviceSpec::Cpu | crate::resource::DeviceSpec::Metal => 4,
    };
    std::thread::available_parallelism().map_or(1, |n| n.get().min(most))
}

/// Yields to the host's event loop between chunks (wasm32): returns a future
/// that completes once the host has had a turn.
pub type Pace = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send + Sync,
>;

/// The plan of a load's `source`: a hub source with the download switch
/// first downloads what the cache lacks, with the load's progress and
/// cancel. Blocking: the native load loop's (wasm32 resolves with
/// `plan::resolve`: it has no downloads).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn resolve_for_load(
    source: &ModelSource,
    ctx: &read::ReadContext<'_>,
) -> crate::error::Result<plan::Plan> {
    let cancel = ctx.cancel;
    let stop = move || cancel.is_cancelled();
    let sink = download::Sink {
        stop: &stop,
        progress: Some(ctx.progress),
        hook: ctx.hook,
    };
    resolve_reporting(source, &sink)
}

/// The plan of `source`, a download (if it is a hub source with the switch)
/// reporting to `sink` and stopping when it says so.
fn resolve_reporting(
    source: &ModelSource,
    sink: &download::Sink<'_>,
) -> crate::error::Result<plan::Plan> {
    let ModelSource::Hub {
        repo,
        revision,
        download: Some(policy),
    } = source
    else {
        return plan::resolve(source);
    };
    let (snapshot, jail) = download::snapshot(repo, revision.as_deref(), Some(policy), sink)?;
    plan::resolve_root(&root::Root::dir(snapshot, jail))
}

/// The layout of `source` and the bytes its load holds at its peak (its
/// tensors, plus the conversion to `dtype` and any staging on `device`),
/// read from headers only: what a pool charges a load when it admits it,
/// and the plan the load then reads. Blocking (file I/O).
///
/// A download (a hub source with the switch) stops when `cancel` is
/// cancelled (a pool's load is), at its next chunk; its progress is not
/// reported.
pub(crate) fn estimate(
    source: &ModelSource,
    component: Option<&str>,
    dtype: Option<candle_core::DType>,
    device: &candle_core::Device,
    page_cache: PageCache,
    cancel: &tokio_util::sync::CancellationToken,
) -> crate::error::Result<(plan::Plan, u64)> {
    if let ModelSource::Parked(parked) = source {
        // Copied back as it was parked: the bytes it holds.
        return Ok((plan::Plan::empty(), parked.bytes()));
    }
    let stop = || cancel.is_cancelled();
    let sink = download::Sink::quiet(&stop);
    let mut plan = resolve_reporting(source, &sink)?;
    if let Some(name) = component {
        plan.components.retain(|c| c.name == name);
        if plan.components.iter().all(|c| c.files.is_empty()) {
            return Err(crate::error::Error::InvalidArgument(format!(
                "the pipeline has no component {name:?} with weights (any more)"
            )));
        }
    }
    let peak = read::peak_bytes(&plan, dtype, device, page_cache)?;
    Ok((plan, peak))
}

/// The components of a diffusers pipeline that hold weights, in load
/// order; an error for a source that is not a pipeline. Headers and
/// configs only (the hub cache only, never a download).
pub(crate) fn weighted_components(source: &ModelSource) -> crate::error::Result<Vec<String>> {
    let plan = plan::resolve(source)?;
    let pipeline = plan.components.iter().any(|c| c.name != "model");
    if !pipeline {
        return Err(crate::error::Error::InvalidArgument(
            "not a diffusers pipeline (no model_index.json components): add it as one model".into(),
        ));
    }
    Ok(plan
        .components
        .iter()
        .filter(|c| !c.files.is_empty())
        .map(|c| c.name.clone())
        .collect())
}
