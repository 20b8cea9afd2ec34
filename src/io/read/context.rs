//! What every read is handed (the cancellation token, progress, the
//! chunking, the device and dtype: [`ReadContext`]), the dtype rules, and
//! the errors a read reports.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device};
use safetensors::Dtype;
use tokio_util::sync::CancellationToken;

use super::jobs::Job;
use crate::error::{Error, Result};
use crate::io::files::FilePlan;
use crate::io::progress::ProgressCounters;
use crate::io::safetensors::TensorEntry;

pub use crate::io::progress::ProgressHook;

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
    /// What the load leaves in the page cache.
    pub(crate) page_cache: crate::io::PageCache,
    /// The CUDA path's pinned staging buffers.
    #[cfg(feature = "cuda")]
    pub(crate) staging: &'a super::staging::StagingPool,
}

impl ReadContext<'_> {
    pub(crate) fn checkpoint(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    pub(crate) fn advance(&self, bytes: u64) -> Result<()> {
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

pub(crate) fn file_label(component: &str, file: &FilePlan) -> Arc<str> {
    if component == "model" {
        file.path.display().to_string().into()
    } else {
        format!("{component}: {}", file.path.display()).into()
    }
}

pub(crate) fn read_error(file: &FilePlan, entry: Option<&TensorEntry>, e: std::io::Error) -> Error {
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

/// A failed read of `job`: a truncated file names the first tensor of the
/// read that ends past the file's end (where its length is known).
pub(crate) fn job_error(file: &FilePlan, job: &Job, e: std::io::Error) -> Error {
    let len = file.reader.len();
    let culprit = job
        .segments
        .iter()
        .find(|s| len.is_some_and(|len| job.offset + (s.src + s.len) as u64 > len))
        .or(job.segments.first())
        .and_then(|s| file.header.tensors.get(s.tensor));
    read_error(file, culprit, e)
}

pub(crate) fn unsupported(file: &FilePlan, entry: &TensorEntry) -> Error {
    Error::UnsupportedDtype {
        path: file.path.clone(),
        tensor: entry.name.clone(),
        dtype: format!("{:?}", entry.dtype),
    }
}

pub(crate) fn too_large(file: &FilePlan) -> Error {
    Error::invalid_model(
        &file.path,
        "the file's tensors do not fit in this address space",
    )
}

pub(crate) fn internal(file: &FilePlan) -> Error {
    Error::invalid_model(&file.path, "internal: inconsistent read plan")
}
