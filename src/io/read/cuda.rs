//! The CUDA load path (feature `cuda`): file → pinned host staging → device.
//!
//! Each file gets one device buffer per dtype, allocated up front and
//! counted at once; every tensor is a view into it (as on the CPU). The file
//! is read in chunks of `chunk_size` by up to `read_threads` threads. Each
//! thread owns two pinned (page-locked) staging buffers: it reads a chunk
//! into one and enqueues asynchronous host-to-device copies from it on the
//! device's stream, then reads the next chunk into the other while the first
//! is copied (double buffering). Before a staging buffer is refilled, the
//! thread waits on the event recorded after its copies, so a copy never
//! reads a buffer being overwritten. No tensor is ever held in host memory:
//! the staging buffers are the only host memory a load uses, and they are
//! counted in the reservation while it runs.
//!
//! Cancellation is checked after every chunk; on cancel or error the
//! threads stop, every queued copy is waited for, and the device buffers
//! are dropped (freed on the device's stream) before the error returns.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::cuda_backend::cudarc::driver::{
    result, CudaSlice, CudaStream, DevicePtrMut, SyncOnDrop,
};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{DType, Storage, Tensor};

use super::context::{internal, job_error, too_large, ReadContext};
use super::engine::{read_in_steps, run, Dealing, Target, STEP};
use super::jobs::{jobs, Job};
use super::place::{cut, layout};
use super::staging::{driver, Staging};
use crate::error::{Error, Result};
use crate::io::cache::{drop_after_load, drop_read, Access};
use crate::io::direct::{Steps, ALIGN};
use crate::io::files::{read_exact_at, FilePlan};
use crate::io::reader::{file_read_exact_at, Reader};
use crate::resource::{cuda_memory, Reservation};

/// The host memory a CUDA load of `threads` threads stages through, which
/// its budget counts: two pinned buffers of one chunk per thread.
pub(crate) fn staging_bytes(chunk_size: usize, threads: usize) -> u64 {
    (chunk_size.max(1) as u64)
        .saturating_mul(2)
        .saturating_mul(threads.max(1) as u64)
}

/// A typed device buffer: one per dtype per file.
pub(crate) enum DeviceBuffer {
    U8(CudaSlice<u8>),
    U32(CudaSlice<u32>),
    I16(CudaSlice<i16>),
    I32(CudaSlice<i32>),
    I64(CudaSlice<i64>),
    F16(CudaSlice<half::f16>),
    BF16(CudaSlice<half::bf16>),
    F32(CudaSlice<f32>),
    F64(CudaSlice<f64>),
}

macro_rules! each_device_buffer {
    ($value:expr, $v:ident => $body:expr) => {
        match $value {
            DeviceBuffer::U8($v) => $body,
            DeviceBuffer::U32($v) => $body,
            DeviceBuffer::I16($v) => $body,
            DeviceBuffer::I32($v) => $body,
            DeviceBuffer::I64($v) => $body,
            DeviceBuffer::F16($v) => $body,
            DeviceBuffer::BF16($v) => $body,
            DeviceBuffer::F32($v) => $body,
            DeviceBuffer::F64($v) => $body,
        }
    };
}

impl DeviceBuffer {
    /// An uninitialised buffer of `bytes` (a multiple of the dtype's size):
    /// every byte is written by the copies before any tensor is made.
    pub(crate) fn alloc(device: &CudaDevice, dtype: DType, bytes: usize) -> Result<DeviceBuffer> {
        // At least one element: the driver refuses a 0-byte allocation, and
        // a group of empty tensors only needs a buffer to view.
        let n = (bytes / dtype.size_in_bytes()).max(1);
        // SAFETY: the memory is uninitialised; the load writes every byte of
        // it (the tensors of a group tile it exactly) before a tensor over it
        // exists, and drops it unread if the load stops first.
        let buffer = unsafe {
            match dtype {
                DType::U8 => device.alloc::<u8>(n).map(DeviceBuffer::U8),
                DType::U32 => device.alloc::<u32>(n).map(DeviceBuffer::U32),
                DType::I16 => device.alloc::<i16>(n).map(DeviceBuffer::I16),
                DType::I32 => device.alloc::<i32>(n).map(DeviceBuffer::I32),
                DType::I64 => device.alloc::<i64>(n).map(DeviceBuffer::I64),
                DType::F16 => device.alloc::<half::f16>(n).map(DeviceBuffer::F16),
                DType::BF16 => device.alloc::<half::bf16>(n).map(DeviceBuffer::BF16),
                DType::F64 => device.alloc::<f64>(n).map(DeviceBuffer::F64),
                DType::F32 => device.alloc::<f32>(n).map(DeviceBuffer::F32),
                other => {
                    return Err(Error::Device(format!(
                        "internal: no CUDA buffer for {other:?}"
                    )))
                }
            }
        };
        buffer.map_err(|e| {
            let available = cuda_memory(device).map_or(0, |(free, _)| free);
            tracing::debug!("CUDA allocation of {bytes} bytes failed: {e}");
            Error::InsufficientMemory {
                needed: bytes as u64,
                available,
                pinned: 0,
            }
        })
    }

    /// The buffer's device address, for writing on `stream`; the guard
    /// records the write when dropped (after the copies are queued).
    pub(crate) fn device_ptr_mut<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (u64, SyncOnDrop<'a>) {
        each_device_buffer!(self, v => {
            let (ptr, guard) = v.device_ptr_mut(stream);
            (ptr, guard)
        })
    }

    pub(crate) fn into_tensor(self, device: &CudaDevice) -> Tensor {
        each_device_buffer!(self, v => {
            let n = v.len();
            let storage = CudaStorage::wrap_cuda_slice(v, device.clone());
            Tensor::from_storage(Storage::Cuda(storage), n, BackpropOp::none(), false)
        })
    }
}

/// Read one file's tensors onto `device` (see the module docs).
pub(super) async fn read_file(
    file: &FilePlan,
    ctx: &ReadContext<'_>,
    device: &CudaDevice,
    reservation: &mut Reservation,
    access: &Access,
) -> Result<Vec<(String, Tensor)>> {
    let layout = layout(file)?;
    let (groups, placement) = &layout;
    let mut buffers = Vec::with_capacity(groups.len());
    for &(dtype, bytes) in groups {
        let bytes = usize::try_from(bytes).map_err(|_| too_large(file))?;
        buffers.push(DeviceBuffer::alloc(device, dtype, bytes)?);
        reservation.grow(bytes as u64);
    }
    let stream = device.cuda_stream();
    // The allocations above are ordered on this thread's stream; the copies
    // run on the reader threads' streams: let the allocations complete
    // first.
    stream.synchronize().map_err(driver)?;
    let chunk = ctx.chunk_size.max(1);
    let spans: Vec<(u64, u64)> = file
        .header
        .tensors
        .iter()
        .map(|t| (t.offset, t.len))
        .collect();
    let jobs = jobs(&spans, placement, chunk).ok_or_else(|| too_large(file))?;
    let threads = ctx.threads.clamp(1, jobs.len().max(1));
    // A staging buffer need not be larger than the largest read; a direct
    // read fills it with the whole blocks that cover the read, up to a
    // block more on each side.
    let edges = match access {
        Access::Direct(_) => 2 * ALIGN,
        Access::Cached | Access::Dropped => 0,
    };
    let staging_size = jobs
        .iter()
        .map(|j| j.len)
        .max()
        .unwrap_or(0)
        .clamp(1, chunk)
        + edges;
    let staging = staging_bytes(staging_size, threads);
    reservation.grow(staging);
    let copied = copy_all(file, ctx, device, &mut buffers, jobs, staging_size, access).await;
    reservation.shrink(staging);
    copied?;
    let whole = buffers.into_iter().map(|b| b.into_tensor(device)).collect();
    let tensors = cut(file, layout, whole, ctx, reservation)?;
    // Every copy (each reader thread waited for its own) and conversion
    // (queued on this thread's stream) is complete before the load says
    // Ready: a host's kernels need no synchronisation with the load, and a
    // failure surfaces here, not in the first inference.
    stream.synchronize().map_err(driver)?;
    Ok(tensors)
}

/// The CUDA target of the read engine: each read lands in one of its
/// thread's two pinned staging buffers, and its segments are copied from
/// there to the group buffers' device addresses (`bases`) on `stream`.
struct Cuda<'a> {
    file: &'a FilePlan,
    ctx: &'a ReadContext<'a>,
    stream: &'a CudaStream,
    bases: Vec<u64>,
    chunk: usize,
    access: &'a Access,
}

/// A reading thread's two staging buffers, used in turn, and how many
/// reads it has done.
struct Stages<'a> {
    buffers: [Staging<'a>; 2],
    reads: usize,
    /// A cold file read through the page cache: the file opened again for
    /// this thread, for a readahead of its own (as on the host).
    own: Option<std::fs::File>,
}

impl<'a> Target for Cuda<'a> {
    type Read = Job;
    type Worker = Stages<'a>;

    fn job(read: &Job) -> &Job {
        read
    }

    fn worker(&self) -> Result<Stages<'a>> {
        let context = self.stream.context();
        context.bind_to_thread().map_err(driver)?;
        Ok(Stages {
            buffers: [
                Staging::new(self.ctx.staging, context, self.chunk)?,
                Staging::new(self.ctx.staging, context, self.chunk)?,
            ],
            reads: 0,
            own: self.access.thread_file(&self.file.reader),
        })
    }

    fn dealing(&self) -> Dealing {
        Dealing::for_access(self.access)
    }

    fn read(&self, stages: &mut Stages<'a>, job: &mut Job) -> Result<()> {
        let file = self.file;
        let Some(stage) = stages.buffers.get_mut(stages.reads % 2) else {
            return Err(internal(file));
        };
        stages.reads += 1;
        // Wait for the copies out of this buffer two reads ago.
        stage.copied.synchronize().map_err(driver)?;
        let Some(pinned) = stage.buffer.as_mut() else {
            return Err(internal(file));
        };
        let host = pinned.as_mut_slice().map_err(driver)?;
        // Where the read's bytes start in the staging buffer.
        let skip = match self.access {
            // Pinned memory is page-aligned, as a direct read needs.
            // In steps, as a buffered read is: a cancel waits for one.
            Access::Direct(direct) => {
                let cancel = self.ctx.cancel;
                let steps = Steps {
                    bytes: STEP,
                    stop: &|| cancel.is_cancelled(),
                };
                direct
                    .read_covering(host, job.offset, job.len, &steps)
                    .map_err(|e| {
                        if cancel.is_cancelled() {
                            Error::Cancelled
                        } else {
                            job_error(file, job, e)
                        }
                    })?
            }
            Access::Cached | Access::Dropped => {
                let Some(dest) = host.get_mut(..job.len) else {
                    return Err(internal(file));
                };
                read_in_steps(self.ctx.cancel, dest, job.offset, |piece, at| {
                    match &stages.own {
                        Some(own) => file_read_exact_at(own, piece, at),
                        None => read_exact_at(&file.reader, piece, at),
                    }
                    .map_err(|e| job_error(file, job, e))
                })?;
                0
            }
        };
        if let (Access::Dropped, Reader::File(f)) = (self.access, &file.reader) {
            drop_read(f, job.offset, job.len as u64);
        }
        let Some(data) = host.get(skip..skip + job.len) else {
            return Err(internal(file));
        };
        for segment in &job.segments {
            let (Some(&base), Some(src)) = (
                self.bases.get(segment.group),
                data.get(segment.src..segment.src + segment.len),
            ) else {
                return Err(internal(file));
            };
            // SAFETY: `base + dst .. + len` lies inside the group's device
            // buffer (the layout tiles it with its tensors, and the segment
            // is part of one tensor), whose allocation completed before the
            // reader threads started, and which is dropped only after every
            // reader thread has waited for its own copies (the events of its
            // staging buffers, or its stream after a failure). `src` is
            // pinned memory that is not written again before `copied`,
            // recorded after this copy, has completed, and not reused or
            // freed before this thread has waited for its copies.
            unsafe { result::memcpy_htod_async(base + segment.dst, src, self.stream.cu_stream()) }
                .map_err(driver)?;
        }
        stage.copied.record(self.stream).map_err(driver)
    }

    fn failed(&self, _: &mut Stages<'a>) {
        // A failure may leave copies queued that no event covers: wait for
        // every copy this thread queued (its stream) before its staging
        // buffers go back to the pool or the device buffers are freed.
        if let Err(e) = self.stream.synchronize() {
            tracing::warn!("CUDA: waiting for a failed load's copies failed: {e}");
        }
    }
}

/// Read every job and queue its copies, through the read engine.
async fn copy_all(
    file: &FilePlan,
    ctx: &ReadContext<'_>,
    device: &CudaDevice,
    buffers: &mut [DeviceBuffer],
    jobs: Vec<Job>,
    chunk: usize,
    access: &Access,
) -> Result<()> {
    let stream = device.cuda_stream();
    let context = stream.context().clone();
    // The device address of each group's buffer; the guards record the
    // writes on the stream once every copy is queued.
    let mut bases = Vec::with_capacity(buffers.len());
    let mut guards = Vec::with_capacity(buffers.len());
    for buffer in buffers.iter_mut() {
        let (ptr, guard) = buffer.device_ptr_mut(&stream);
        bases.push(ptr);
        guards.push(guard);
    }
    let target = Cuda {
        file,
        ctx,
        stream: &stream,
        bases,
        chunk,
        access,
    };
    let outcome = run(&target, jobs, file.header.tensors.len(), ctx, None).await;
    drop_after_load(access, &file.reader);
    drop(guards);
    match outcome {
        Err(e) => {
            // Nothing may still be copying into buffers about to be freed
            // (each reader thread waited for its own copies; this waits for
            // the whole context, whatever stream anything was queued on).
            if let Err(e) = context.synchronize() {
                tracing::warn!("CUDA: synchronizing after a failed load failed: {e}");
            }
            Err(e)
        }
        Ok(()) => Ok(()),
    }
}
