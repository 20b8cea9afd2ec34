//! Reading tensors: in chunks, straight into their final buffers, checking
//! cancellation and publishing progress at every chunk.
//!
//! Each file gets one buffer per dtype, allocated up front (counted at once
//! in the reservation, and advised to use huge pages, which cuts page faults
//! on fresh memory 512-fold); every tensor is a view into it. The chunks are
//! read by up to `read_threads` threads, interleaved so the file is still
//! read roughly in order.

// On wasm32 loads take the paced path; the threaded one is unused there.
#![cfg_attr(target_arch = "wasm32", allow(dead_code))]

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
}

impl ReadContext<'_> {
    pub(crate) fn checkpoint(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    fn advance(&self, bytes: u64) -> Result<()> {
        match self.hook {
            Some(hook) => {
                // One call at a time, each seeing more bytes than the last.
                let _serial = self
                    .hook_lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                self.progress.add_bytes(bytes);
                hook(&self.progress.read());
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

/// Bytes the plan will hold once loaded (after dtype conversion); checks
/// every dtype is loadable, before anything is allocated.
pub(crate) fn resident_bytes(plan: &Plan, target: Option<DType>) -> Result<u64> {
    let mut total = 0u64;
    for file in plan.files() {
        for t in &file.header.tensors {
            let stored = candle_dtype(t.dtype).ok_or_else(|| Error::UnsupportedDtype {
                path: file.path.clone(),
                tensor: t.name.clone(),
                dtype: format!("{:?}", t.dtype),
            })?;
            let elems = t.len / stored.size_in_bytes() as u64;
            total += elems * target_dtype(stored, target).size_in_bytes() as u64;
        }
    }
    Ok(total)
}

/// Read every tensor of `plan`. Each buffer is counted in `reservation` the
/// moment it is allocated; on any error or cancel, everything read so far is
/// dropped before returning.
pub(crate) fn read_plan(
    plan: Plan,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<TensorPipeline> {
    ctx.progress.set_totals(plan.bytes(), plan.tensor_count());
    ctx.checkpoint()?;
    let info = plan_info(&plan);
    let mut components = Vec::with_capacity(plan.components.len());
    for component in plan.components {
        let mut tensors = BTreeMap::new();
        for file in &component.files {
            ctx.progress.set_current(file_label(&component.name, file));
            for (name, tensor) in read_file(file, ctx, reservation)? {
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

fn read_file(
    file: &FilePlan,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<Vec<(String, Tensor)>> {
    let mut prepared = prepare(file, reservation)?;
    read_chunks(file, ctx, &mut prepared.buffers, &prepared.placement)?;
    finish(file, prepared, ctx, reservation)
}

/// A file's buffers, allocated, and where each tensor goes in them.
struct Prepared {
    /// Per buffer: its dtype and size in bytes.
    groups: Vec<(DType, u64)>,
    /// Per tensor: its buffer and byte offset in it.
    placement: Vec<(usize, u64)>,
    buffers: Vec<Buffer>,
}

/// One buffer per dtype for the whole file: one allocation, straight from
/// the OS (so it goes straight back on free, whatever the allocator's
/// heuristics), advised to use huge pages; each tensor becomes a view into it.
fn prepare(file: &FilePlan, reservation: &mut Reservation) -> Result<Prepared> {
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
        placement.push((group, groups[group].1));
        groups[group].1 += entry.len;
    }
    let buffers = groups
        .iter()
        .map(|&(dtype, bytes)| {
            let mut buffer = Buffer::alloc(dtype, bytes as usize);
            advise_huge_pages(buffer.bytes_mut());
            reservation.grow(bytes);
            buffer
        })
        .collect();
    Ok(Prepared {
        groups,
        placement,
        buffers,
    })
}

/// Hand the read buffers to candle and cut them into the file's tensors
/// (converting dtypes and moving to the device where asked).
fn finish(
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
    let entries = &file.header.tensors;
    let mut tensors = Vec::with_capacity(entries.len());
    for (entry, &(group, offset)) in entries.iter().zip(&placement) {
        let size = groups[group].0.size_in_bytes() as u64;
        let view = whole[group]
            .narrow(0, (offset / size) as usize, (entry.len / size) as usize)?
            .reshape(entry.shape.as_slice())?;
        let target = target_dtype(view.dtype(), ctx.dtype);
        let view = if target == view.dtype() {
            view
        } else {
            let converted = view.to_dtype(target)?;
            reservation.grow(converted.elem_count() as u64 * target.size_in_bytes() as u64);
            reservation.shrink(entry.len);
            converted
        };
        let tensor = if ctx.device.is_cpu() {
            view
        } else {
            view.to_device(ctx.device)?
        };
        tensors.push((entry.name.clone(), tensor));
    }
    Ok(tensors)
}

/// [`read_plan`] for the JS event loop: one chunk at a time, yielding to the
/// host between chunks so a page stays responsive and an abort lands at once.
#[cfg(target_arch = "wasm32")]
pub(crate) async fn read_plan_paced(
    plan: Plan,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
    pace: Option<&super::Pace>,
) -> Result<TensorPipeline> {
    ctx.progress.set_totals(plan.bytes(), plan.tensor_count());
    ctx.checkpoint()?;
    let info = plan_info(&plan);
    let mut components = Vec::with_capacity(plan.components.len());
    for component in plan.components {
        let mut tensors = BTreeMap::new();
        for file in &component.files {
            ctx.progress.set_current(file_label(&component.name, file));
            let mut prepared = prepare(file, reservation)?;
            let chunk_size = ctx.chunk_size.max(1) as u64;
            for (entry, &(group, start)) in file.header.tensors.iter().zip(&prepared.placement) {
                let mut done = 0u64;
                while done < entry.len {
                    let len = chunk_size.min(entry.len - done);
                    let at = (start + done) as usize;
                    let dest = &mut prepared.buffers[group].bytes_mut()[at..at + len as usize];
                    read_exact_at(&file.reader, dest, entry.offset + done)
                        .map_err(|e| read_error(file, entry, e))?;
                    done += len;
                    ctx.advance(len)?;
                    match pace {
                        Some(pace) => pace().await,
                        None => tokio::task::yield_now().await,
                    }
                    ctx.checkpoint()?;
                }
                ctx.progress.tensor_done();
            }
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

fn plan_info(plan: &Plan) -> PipelineInfo {
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

fn read_error(file: &FilePlan, entry: &TensorEntry, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::invalid_model(
            &file.path,
            format!(
                "file is truncated: tensor {:?} ends past the end of the file",
                entry.name
            ),
        )
    } else {
        Error::io(&file.path, &e)
    }
}

fn unsupported(file: &FilePlan, entry: &TensorEntry) -> Error {
    Error::UnsupportedDtype {
        path: file.path.clone(),
        tensor: entry.name.clone(),
        dtype: format!("{:?}", entry.dtype),
    }
}

fn read_chunks(
    file: &FilePlan,
    ctx: &ReadContext<'_>,
    buffers: &mut [Buffer],
    placement: &[(usize, u64)],
) -> Result<()> {
    let entries = &file.header.tensors;
    let chunk_size = ctx.chunk_size.max(1);
    // Carve each group's buffer into its tensors' slices, in file order.
    let mut rest: Vec<&mut [u8]> = buffers.iter_mut().map(Buffer::bytes_mut).collect();
    let mut chunks = Vec::new();
    let mut remaining = Vec::with_capacity(entries.len());
    for (tensor, (entry, &(group, _))) in entries.iter().zip(placement).enumerate() {
        let (dest, tail) = std::mem::take(&mut rest[group]).split_at_mut(entry.len as usize);
        rest[group] = tail;
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
        read_exact_at(&file.reader, chunk.dest, chunk.offset)
            .map_err(|e| read_error(file, &entries[chunk.tensor], e))?;
        if remaining[chunk.tensor].fetch_sub(1, Ordering::AcqRel) == 1 {
            ctx.progress.tensor_done();
        }
        ctx.advance(chunk.dest.len() as u64)
    };

    // No threads on wasm32.
    let threads = if cfg!(target_arch = "wasm32") {
        1
    } else {
        ctx.threads.clamp(1, chunks.len().max(1))
    };
    if threads == 1 {
        return chunks.into_iter().try_for_each(read_one);
    }
    // Deal the chunks out round-robin: thread k reads chunks k, k+n, ...
    let mut groups: Vec<Vec<Chunk<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, chunk) in chunks.into_iter().enumerate() {
        groups[i % threads].push(chunk);
    }
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for group in groups {
            let (failed, first_error, read_one) = (&failed, &first_error, &read_one);
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
