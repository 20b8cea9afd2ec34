//! The devices weights load onto ([`DeviceSpec`]), and what each can
//! still give: the one reading of a device's free memory.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{Error, Result};

/// Which device weights are loaded onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    /// Host memory.
    #[default]
    Cpu,
    /// CUDA device `N` (needs the `cuda` feature).
    Cuda(usize),
    /// The Metal device (needs the `metal` feature).
    Metal,
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "metal" => Ok(DeviceSpec::Metal),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "unknown device {s:?} (expected cpu, cuda:N or metal)"
                    ))
                }),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal => f.write_str("metal"),
        }
    }
}

impl DeviceSpec {
    /// Open the candle-core device.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(_) if !cfg!(feature = "cuda") => {
                Err(Error::device_not_built(&self.to_string(), "cuda"))
            }
            DeviceSpec::Metal if !cfg!(feature = "metal") => {
                Err(Error::device_not_built("metal", "metal"))
            }
            DeviceSpec::Cuda(n) => Device::new_cuda(n).map_err(Error::from),
            DeviceSpec::Metal => Device::new_metal(0).map_err(Error::from),
        }
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (Linux).
pub(crate) fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Free and total memory of `device`, as its driver reports them (CUDA
/// only; `None` elsewhere or if the query fails).
pub(crate) fn device_memory(device: &Device) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        return cuda_memory(cuda);
    }
    let _ = device;
    None
}

/// Free and total memory of a CUDA device, as its driver reports them
/// (`None` if the query fails).
#[cfg(feature = "cuda")]
pub(crate) fn cuda_memory(device: &candle_core::cuda_backend::CudaDevice) -> Option<(u64, u64)> {
    let info = device.cuda_stream().context().mem_get_info();
    info.map(|(free, total)| (free as u64, total as u64))
        .map_err(|e| tracing::warn!(error = %e, "CUDA memory query failed"))
        .ok()
}

/// Memory `device` can still give, where it can be known: the kernel's
/// `MemAvailable` for the CPU, the driver's free memory for CUDA; candle
/// exposes none for Metal, where the allocation itself reports a shortage.
/// The one reading of a device's free memory, for a manager's budget
/// check and a pool's default budget alike.
pub(crate) fn free_memory(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => mem_available(),
        Device::Cuda(_) => device_memory(device).map(|(free, _)| free),
        Device::Metal(_) => None,
    }
}
