//! Reading tensors: in chunks, straight into their final buffers, checking
//! cancellation and publishing progress at every chunk.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytemuck::Pod;
use candle_core::{Device, Tensor, WithDType};
use safetensors::Dtype;
use tokio_util::sync::CancellationToken;

use super::source::{read_exact_at, FilePlan, Plan};
use crate::pipeline::{Component, PipelineInfo, TensorPipeline};
use crate::resource::Reservation;
use crate::state::{Progress, ProgressCounters};
use crate::{Error, Result};

/// A synchronous observer called on the loader thread after every chunk.
pub type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;

/// What a read needs besides the plan.
pub(crate) struct ReadContext<'a> {
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) progress: &'a ProgressCounters,
    pub(crate) chunk_size: usize,
    pub(crate) hook: Option<&'a ProgressHook>,
    pub(crate) device: &'a Device,
}

impl ReadContext<'_> {
    fn checkpoint(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    fn advance(&self, bytes: u64) -> Result<()> {
        self.progress.add_bytes(bytes);
        if let Some(hook) = self.hook {
            hook(&self.progress.read());
        }
        self.checkpoint()
    }
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
    let info = PipelineInfo {
        sample_size: plan.sample_size,
        config: plan.config.clone(),
        bytes: plan.bytes(),
        tensors: plan.tensor_count(),
    };
    let mut components = Vec::with_capacity(plan.components.len());
    for component in plan.components {
        let mut tensors = BTreeMap::new();
        for file in &component.files {
            let label: Arc<str> = if component.name == "model" {
                file.path.display().to_string().into()
            } else {
                format!("{}: {}", component.name, file.path.display()).into()
            };
            ctx.progress.set_current(label);
            for entry in &file.header.tensors {
                let tensor = read_tensor(file, entry, ctx, reservation)?;
                ctx.progress.tensor_done();
                tensors.insert(entry.name.clone(), tensor);
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

fn read_tensor(
    file: &FilePlan,
    entry: &super::safetensors::TensorEntry,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<Tensor> {
    macro_rules! typed {
        ($t:ty) => {
            read_typed::<$t>(file, entry, ctx, reservation)
        };
    }
    match entry.dtype {
        Dtype::U8 => typed!(u8),
        Dtype::U32 => typed!(u32),
        Dtype::I16 => typed!(i16),
        Dtype::I32 => typed!(i32),
        Dtype::I64 => typed!(i64),
        Dtype::F16 => typed!(half::f16),
        Dtype::BF16 => typed!(half::bf16),
        Dtype::F32 => typed!(f32),
        Dtype::F64 => typed!(f64),
        other => Err(Error::UnsupportedDtype {
            path: file.path.clone(),
            tensor: entry.name.clone(),
            dtype: format!("{other:?}"),
        }),
    }
}

fn read_typed<T: WithDType + Pod>(
    file: &FilePlan,
    entry: &super::safetensors::TensorEntry,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<Tensor> {
    let elem = std::mem::size_of::<T>() as u64;
    let count = entry.len / elem;
    debug_assert_eq!(count * elem, entry.len, "validated against shape × dtype");
    // Zeroed allocations of this size come straight from the OS as untouched
    // pages: the read below is the first and only write to them.
    let mut data: Vec<T> = bytemuck::zeroed_vec(count as usize);
    reservation.grow(entry.len);
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut data);
    let mut offset = entry.offset;
    for chunk in bytes.chunks_mut(ctx.chunk_size.max(1)) {
        read_exact_at(&file.file, chunk, offset).map_err(|e| {
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
        })?;
        offset += chunk.len() as u64;
        ctx.advance(chunk.len() as u64)?;
    }
    let tensor = Tensor::from_vec(data, entry.shape.as_slice(), &Device::Cpu)?;
    if ctx.device.is_cpu() {
        Ok(tensor)
    } else {
        Ok(tensor.to_device(ctx.device)?)
    }
}
