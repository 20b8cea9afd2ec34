//! Reading tensors: in chunks, straight into their final buffers, checking
//! cancellation and publishing progress at every chunk.
//!
//! Each file gets one buffer per dtype, allocated up front (counted at once
//! in the reservation, and advised to use huge pages, which cuts page faults
//! on fresh memory 512-fold); every tensor is a view into it. The chunks are
//! read by up to `read_threads` threads, interleaved so the file is still
//! read roughly in order.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};
use safetensors::Dtype;
use tokio_util::sync::CancellationToken;

use super::buffer::{advise_huge_pages, Buffer};
use super::files::read_exact_at;
use super::plan::{FilePlan, Plan};
use super::safetensors::TensorEntry;
use super::Pace;
use crate::pipeline::{Component, PipelineInfo, TensorPipeline};
use crate::resource::Reservation;
use crate::state::{Progress, ProgressCounters};
use crate::{Error, Result};

/// A synchronous observer called on a loader thread after every chunk;
/// never called concurrently, and each call sees more bytes than the last.
pub type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;

/// What a read needs besides the plan.
pub(crate) struct ReadContext<'a> {
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) progress: &'a ProgressCounters,
    pub(crate) chunk_size: usize,
    pub(crate) threads: usize,
    pub(crate) hook: Option<&'a ProgressHook>,
    pub(crate) hook_lock: Mutex<()>,
    pub(crate) device: &'a Device,
    pub(crate) dtype: Option<DType>,
    /// The CUDA path's pinned staging buffers.
    #[cfg(feature = "cuda")]
    pub(crate) staging: &'a super::cuda::StagingPool,
}

impl ReadContext<'_> {
    pub(crate) fn checkpoint(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    pub(super) fn advance(&self, bytes: u64) -> Result<()> {
        match self.hook {
            Some(hook) => {
                // One call at a time, each seeing more bytes than the last.
                let _serial = self
                    .hook_lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                self.progress.add_bytes(bytes);
                let progress = self.progress.read();
                // The user's hook may panic: that fails the load, and stops
                // the other reading threads at their next chunk.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&progress)))
                    .map_err(|_| Error::InvalidArgument("the progress hook panicked".into()))?;
            }
            None => self.progress.add_bytes(bytes),
        }
        self.checkpoint()
    }
}

/// The candle dtype a safetensors dtype loads as, if any.
pub(crate) fn candle_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

/// The dtype a tensor ends up in: floats convert to the target, others stay.
pub(crate) fn target_dtype(stored: DType, target: Option<DType>) -> DType {
    match target {
        Some(t) if stored.is_float() => t,
        _ => stored,
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
pub(crate) fn peak_bytes(plan: &Plan, target: Option<DType>, device: &Device) -> Result<u64> {
    let mut held = 0u64;
    let mut peak = 0u64;
    for file in plan.files() {
        let (mut stored, mut kept, mut replaced) = (0u64, 0u64, 0u64);
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
            #[cfg(feature = "cuda")]
            if let (Device::Cuda(device), None) = (ctx.device, pace) {
                // Straight to the device through pinned staging buffers.
                for (name, tensor) in super::cuda::read_file(file, ctx, device, reservation)? {
                    tensors.insert(name, tensor);
                }
                continue;
            }
            let mut prepared = prepare(file, reservation)?;
            read_chunks(file, ctx, &mut prepared, pace).await?;
            for (name, tensor) in finish(file, prepared, ctx, reservation)? {
                tensors.insert(name, tensor);
            }
        }
        components.push(Component {
            name: component.name,
            config: component.config,
            tensors,
        });
    }
    Ok(TensorPipeline { components, info })
}

/// One chunk to read: where from, where to, and which tensor it completes.
struct Chunk<'b> {
    offset: u64,
    dest: &'b mut [u8],
    tensor: usize,
}

/// A file's buffers, allocated, and where each tensor goes in them.
pub(super) struct Prepared {
    /// Per buffer: its dtype and size in bytes.
    groups: Vec<(DType, u64)>,
    /// Per tensor: its buffer and byte offset in it.
    pub(super) placement: Vec<(usize, u64)>,
    pub(super) buffers: Vec<Buffer>,
}

/// Where each of a file's tensors goes: one buffer per dtype (its dtype and
/// size in bytes), and per tensor its buffer and byte offset in it.
pub(super) type Layout = (Vec<(DType, u64)>, Vec<(usize, u64)>);

/// The file's tensors grouped by dtype, in file order within each group.
pub(super) fn layout(file: &FilePlan) -> Result<Layout> {
    let entries = &file.header.tensors;
    let mut groups: Vec<(DType, u64)> = Vec::new();
    let mut placement = Vec::with_capacity(entries.len());
    for entry in entries {
        let dtype = candle_dtype(entry.dtype).ok_or_else(|| unsupported(file, entry))?;
        let group = match groups.iter().position(|(d, _)| *d == dtype) {
            Some(g) => g,
            None => {
                groups.push((dtype, 0));
                groups.len() - 1
            }
        };
        let Some((_, size)) = groups.get_mut(group) else {
            return Err(internal(file));
        };
        placement.push((group, *size));
        *size = size.saturating_add(entry.len);
    }
    Ok((groups, placement))
}

/// One buffer per dtype for the whole file: one allocation, straight from
/// the OS (so it goes straight back on free, whatever the allocator's
/// heuristics), advised to use huge pages; each tensor becomes a view into it.
pub(super) fn prepare(file: &FilePlan, reservation: &mut Reservation) -> Result<Prepared> {
    let (groups, placement) = layout(file)?;
    let mut buffers = Vec::with_capacity(groups.len());
    for &(dtype, bytes) in &groups {
        let bytes = usize::try_from(bytes).map_err(|_| too_large(file))?;
        let mut buffer = Buffer::alloc(dtype, bytes).ok_or(Error::InsufficientMemory {
            needed: bytes as u64,
            available: 0,
            pinned: 0,
        })?;
        advise_huge_pages(buffer.bytes_mut());
        reservation.grow(bytes as u64);
        buffers.push(buffer);
    }
    Ok(Prepared {
        groups,
        placement,
        buffers,
    })
}

/// Hand the read buffers to candle and cut them into the file's tensors.
pub(super) fn finish(
    file: &FilePlan,
    prepared: Prepared,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<Vec<(String, Tensor)>> {
    let Prepared {
        groups,
        placement,
        buffers,
    } = prepared;
    let whole: Vec<Tensor> = buffers
        .into_iter()
        .map(|b| {
            let n = b.len();
            b.into_tensor(&[n])
        })
        .collect::<candle_core::Result<_>>()?;
    cut(file, (groups, placement), whole, ctx, reservation)
}

/// Cut a file's buffers (`whole`, one 1-D tensor per group of `layout`)
/// into its tensors, converting dtypes and moving to the device where
/// asked. A tensor that is replaced (converted or moved) is counted when it
/// is made; a buffer all of whose tensors were replaced is uncounted once
/// it is freed, at the end.
pub(super) fn cut(
    file: &FilePlan,
    (groups, placement): Layout,
    whole: Vec<Tensor>,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<Vec<(String, Tensor)>> {
    // Per buffer: whether a view of it is kept (it then stays allocated).
    let mut kept = vec![false; groups.len()];
    let entries = &file.header.tensors;
    let mut tensors = Vec::with_capacity(entries.len());
    for (entry, &(group, offset)) in entries.iter().zip(&placement) {
        let (Some(&(dtype, _)), Some(base)) = (groups.get(group), whole.get(group)) else {
            return Err(internal(file));
        };
        let size = dtype.size_in_bytes() as u64;
        let view = base
            .narrow(0, (offset / size) as usize, (entry.len / size) as usize)?
            .reshape(entry.shape.as_slice())?;
        let target = target_dtype(view.dtype(), ctx.dtype);
        let on_device = view.device().same_device(ctx.device);
        let tensor = if target == view.dtype() && on_device {
            if let Some(k) = kept.get_mut(group) {
                *k = true;
            }
            view
        } else {
            let converted = if target == view.dtype() {
                view
            } else {
                view.to_dtype(target)?
            };
            let moved = if on_device {
                converted
            } else {
                converted.to_device(ctx.device)?
            };
            reservation.grow(moved.elem_count() as u64 * target.size_in_bytes() as u64);
            moved
        };
        tensors.push((entry.name.clone(), tensor));
    }
    // Free the buffers no tensor views any more, then stop counting them.
    drop(whole);
    for (&(_, bytes), kept) in groups.iter().zip(kept) {
        if !kept {
            reservation.shrink(bytes);
        }
    }
    Ok(tensors)
}

pub(super) fn plan_info(plan: &Plan) -> PipelineInfo {
    PipelineInfo {
        sample_size: plan.sample_size,
        config: plan.config.clone(),
        bytes: plan.bytes(),
        tensors: plan.tensor_count(),
    }
}

fn file_label(component: &str, file: &FilePlan) -> Arc<str> {
    if component == "model" {
        file.path.display().to_string().into()
    } else {
        format!("{component}: {}", file.path.display()).into()
    }
}

pub(super) fn read_error(file: &FilePlan, entry: Option<&TensorEntry>, e: std::io::Error) -> Error {
    match entry {
        Some(entry) if e.kind() == std::io::ErrorKind::UnexpectedEof => Error::invalid_model(
            &file.path,
            format!(
                "file is truncated: tensor {:?} ends past the end of the file",
                entry.name
            ),
        ),
        _ => Error::io(&file.path, &e),
    }
}

pub(super) fn unsupported(file: &FilePlan, entry: &TensorEntry) -> Error {
    Error::UnsupportedDtype {
        path: file.path.clone(),
        tensor: entry.name.clone(),
        dtype: format!("{:?}", entry.dtype),
    }
}

pub(super) fn too_large(file: &FilePlan) -> Error {
    Error::invalid_model(
        &file.path,
        "the file's tensors do not fit in this address space",
    )
}

pub(super) fn internal(file: &FilePlan) -> Error {
    Error::invalid_model(&file.path, "internal: inconsistent read plan")
}

/// Read the file's chunks into its buffers.
async fn read_chunks(
    file: &FilePlan,
    ctx: &ReadContext<'_>,
    prepared: &mut Prepared,
    pace: Option<&Pace>,
) -> Result<()> {
    let entries = &file.header.tensors;
    let chunk_size = ctx.chunk_size.max(1);
    // Carve each group's buffer into its tensors' slices, in file order.
    let mut rest: Vec<&mut [u8]> = prepared.buffers.iter_mut().map(Buffer::bytes_mut).collect();
    let mut chunks = Vec::new();
    let mut remaining = Vec::with_capacity(entries.len());
    for (tensor, (entry, &(group, _))) in entries.iter().zip(&prepared.placement).enumerate() {
        let Some(slot) = rest.get_mut(group) else {
            return Err(internal(file));
        };
        let len = usize::try_from(entry.len).map_err(|_| too_large(file))?;
        if len > slot.len() {
            return Err(internal(file));
        }
        let (dest, tail) = std::mem::take(slot).split_at_mut(len);
        *slot = tail;
        let n = dest.len().div_ceil(chunk_size);
        for (i, dest) in dest.chunks_mut(chunk_size).enumerate() {
            chunks.push(Chunk {
                offset: entry.offset + (i * chunk_size) as u64,
                dest,
                tensor,
            });
        }
        if n == 0 {
            // An empty tensor is complete as soon as it exists.
            ctx.progress.tensor_done();
        }
        remaining.push(AtomicUsize::new(n));
    }
    chunks.sort_by_key(|c| c.offset);

    let read_one = |chunk: Chunk<'_>| -> Result<()> {
        let entry = entries.get(chunk.tensor);
        read_exact_at(&file.reader, chunk.dest, chunk.offset)
            .map_err(|e| read_error(file, entry, e))?;
        if remaining
            .get(chunk.tensor)
            .is_some_and(|r| r.fetch_sub(1, Ordering::AcqRel) == 1)
        {
            ctx.progress.tensor_done();
        }
        ctx.advance(chunk.dest.len() as u64)
    };

    if let Some(pace) = pace {
        // On the host's event loop: one chunk, then the host's turn.
        for chunk in chunks {
            read_one(chunk)?;
            pace().await;
            ctx.checkpoint()?;
        }
        return Ok(());
    }
    read_parallel(chunks, ctx.threads, &read_one)
}

/// Read `chunks` on up to `threads` threads, dealt round-robin (thread k
/// reads chunks k, k+n, ...) so the file is still read roughly in order;
/// the first error stops every thread at its next chunk.
fn read_parallel<'b>(
    chunks: Vec<Chunk<'b>>,
    threads: usize,
    read_one: &(dyn Fn(Chunk<'b>) -> Result<()> + Sync),
) -> Result<()> {
    // No threads on wasm32.
    let threads = if cfg!(target_arch = "wasm32") {
        1
    } else {
        threads.clamp(1, chunks.len().max(1))
    };
    if threads == 1 {
        return chunks.into_iter().try_for_each(read_one);
    }
    let mut groups: Vec<Vec<Chunk<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, chunk) in chunks.into_iter().enumerate() {
        if let Some(group) = groups.get_mut(i % threads) {
            group.push(chunk);
        }
    }
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for group in groups {
            let (failed, first_error) = (&failed, &first_error);
            scope.spawn(move || {
                for chunk in group {
                    if failed.load(Ordering::Acquire) {
                        return;
                    }
                    if let Err(e) = read_one(chunk) {
                        failed.store(true, Ordering::Release);
                        first_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
