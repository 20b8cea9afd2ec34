//! The read engine: tensors read in chunks, straight into their final
//! buffers, checking cancellation and publishing progress at every chunk.
//!
//! Each file gets one buffer per dtype, allocated up front (counted at once
//! in the reservation, and advised to use huge pages, which cuts page faults
//! on fresh memory 512-fold); every tensor is a view into it (`place`). One
//! planner splits the file's data into reads (`jobs`), and one loop deals
//! them to up to `read_threads` threads, interleaved so the file is still
//! read roughly in order, or paces them on wasm's event loop (`engine`).
//! CPU, CUDA and wasm are configurations of that loop: its target puts a
//! read's bytes straight into host buffers (`host`), or copies them to the
//! device through pinned staging (`cuda`, `staging`).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod context;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod engine;
mod host;
mod jobs;
pub(crate) mod place;
pub(crate) mod resume;
#[cfg(feature = "cuda")]
pub(crate) mod staging;
pub(crate) mod stream;

use std::collections::BTreeMap;

use candle_core::{DType, Device};

pub use self::context::ProgressHook;
pub(crate) use self::context::ReadContext;
use self::context::{candle_dtype, file_label, target_dtype, unsupported};
use self::place::{finish, plan_info, prepare, Fill};
use crate::error::Result;
use crate::io::cache::{self, Access};
use crate::io::files::FilePlan;
use crate::io::loaded::{Component, TensorPipeline};
use crate::io::plan::Plan;
use crate::io::reader::Reader;
use crate::io::Pace;
use crate::resource::Reservation;

/// How the load reads `file` (see [`PageCache`](crate::io::PageCache)):
/// bytes in memory are always [`Access::Cached`].
fn access(file: &FilePlan, ctx: &ReadContext<'_>) -> Access {
    match &file.reader {
        Reader::File(f) => cache::access(ctx.page_cache, f),
        Reader::Memory(_) => Access::Cached,
    }
}

/// Drop every page of `file` from the page cache once it is read: the
/// reads drop what they read as they go, but the kernel's readahead for one
/// reading thread can bring back pages another thread has just dropped.
fn drop_file(file: &FilePlan) {
    if let Reader::File(f) = &file.reader {
        cache::drop_pages(f, 0, 0);
    }
}

/// Whether tensors are read straight into memory of `device` (the CPU, or
/// CUDA through pinned staging), rather than read on the host and copied.
fn reads_to(device: &Device) -> bool {
    device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda())
}

/// The most bytes the load of `plan` holds at once, which the budget must
/// cover; checks every dtype is loadable, before anything is allocated.
///
/// Files are read one after another. While a file is finished, its buffers
/// at the stored dtype live beside the tensors converted (or copied to the
/// device) from them; then the buffers whose every tensor was replaced are
/// freed. So the peak is the largest, over files, of: what earlier files
/// hold, plus this file's buffers, plus its replaced tensors.
pub(crate) fn peak_bytes(
    plan: &Plan,
    target: Option<DType>,
    device: &Device,
    page_cache: crate::io::PageCache,
) -> Result<u64> {
    // Direct reads into host buffers: each may have a block of slack
    // (`place::slack`), counted here as kept (an estimate above the truth
    // by at most a block per buffer, never below it).
    let align = (page_cache == crate::io::PageCache::Bypass && device.is_cpu())
        .then_some(crate::io::direct::ALIGN);
    let mut held = 0u64;
    let mut peak = 0u64;
    for file in plan.files() {
        let (mut stored, mut kept, mut replaced) = (0u64, 0u64, 0u64);
        if align.is_some() {
            for (dtype, bytes) in place::layout(file)?.0 {
                let extra = place::slack(dtype, bytes, align);
                stored = stored.saturating_add(extra);
                kept = kept.saturating_add(extra);
            }
        }
        for t in &file.header.tensors {
            let dtype = candle_dtype(t.dtype).ok_or_else(|| unsupported(file, t))?;
            let elems = t.len / dtype.size_in_bytes() as u64;
            let final_dtype = target_dtype(dtype, target);
            stored = stored.saturating_add(t.len);
            if final_dtype == dtype && reads_to(device) {
                kept = kept.saturating_add(t.len);
            } else {
                let bytes = elems.saturating_mul(final_dtype.size_in_bytes() as u64);
                replaced = replaced.saturating_add(bytes);
            }
        }
        peak = peak.max(held.saturating_add(stored).saturating_add(replaced));
        held = held.saturating_add(kept).saturating_add(replaced);
    }
    Ok(peak.max(held))
}

/// Read every tensor of `plan`: the one load loop. Each buffer is counted in
/// `reservation` the moment it is allocated and uncounted when it is freed;
/// on any error or cancel, everything read so far is dropped before
/// returning.
///
/// `pace`, on the JS event loop, yields to the host after every chunk (one
/// chunk at a time). Without it the chunks of a file are read by
/// `ctx.threads` threads and the future completes without suspending.
pub(crate) async fn read_plan(
    plan: Plan,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
    pace: Option<&Pace>,
) -> Result<TensorPipeline> {
    ctx.progress.set_totals(plan.bytes(), plan.tensor_count());
    ctx.checkpoint()?;
    let info = plan_info(&plan);
    let mut components = Vec::with_capacity(plan.components.len());
    for component in plan.components {
        let mut tensors = BTreeMap::new();
        for file in &component.files {
            ctx.progress.set_current(file_label(&component.name, file));
            let access = access(file, ctx);
            let read = read_file(file, ctx, reservation, pace, &access).await;
            if let Access::Dropped = access {
                drop_file(file);
            }
            tensors.extend(read?);
        }
        components.push(Component {
            name: component.name,
            config: component.config,
            tensors,
        });
    }
    Ok(TensorPipeline { components, info })
}

/// Read one file's tensors: straight to a CUDA device through pinned
/// staging buffers, or into host buffers cut into tensors.
async fn read_file(
    file: &FilePlan,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
    pace: Option<&Pace>,
    access: &Access,
) -> Result<Vec<(String, candle_core::Tensor)>> {
    #[cfg(feature = "cuda")]
    if let (Device::Cuda(device), None) = (ctx.device, pace) {
        return cuda::read_file(file, ctx, device, reservation, access).await;
    }
    // Direct reads go straight into buffers laid out to line up with the
    // file's blocks.
    let align = matches!(access, Access::Direct(_)).then_some(crate::io::direct::ALIGN);
    let mut prepared = prepare(file, reservation, align, Fill::Overwrite)?;
    host::read_file(file, ctx, &mut prepared, pace, access).await?;
    // SAFETY: `read_file` returned without error: it read every job, and
    // the jobs cover every byte of every tensor of the file.
    unsafe { prepared.seal(file) };
    finish(file, prepared, ctx, reservation)
}
