//! ResourceManager: the device, memory accounting and the budget check, and
//! release after unload.
//!
//! Every tensor buffer the loader allocates is counted in a [`Reservation`]
//! the moment it is allocated and uncounted the moment it is freed, so
//! [`ResourceManager::resident_bytes`] is exact at any time, including in the
//! middle of a load or right after a cancel.
//!
//! ```
//! use model_manager::DeviceSpec;
//!
//! let spec: DeviceSpec = "cpu".parse()?;
//! assert_eq!(spec, DeviceSpec::Cpu);
//! assert_eq!("cuda:1".parse::<DeviceSpec>()?, DeviceSpec::Cuda(1));
//! assert!("tpu".parse::<DeviceSpec>().is_err());
//! # Ok::<(), model_manager::Error>(())
//! ```

mod device;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::Device;

#[cfg(feature = "cuda")]
pub(crate) use self::device::cuda_memory;
pub use self::device::DeviceSpec;
pub(crate) use self::device::{device_memory, free_memory};
use crate::error::{Error, Result};

/// The model's memory, as counted: bytes held, and bytes of a retired model
/// that a lease kept alive past shutdown's drain.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    resident: AtomicU64,
    unreclaimed: AtomicU64,
    device: Mutex<Option<DeviceMemory>>,
}

/// Device memory as the driver reports it (CUDA only): measured when a load
/// starts, before it allocates, and after every release (an unload, a
/// cancelled or failed load), once the device is synchronized. A release
/// that does not give back what the load took shows as a
/// [`shortfall`](DeviceMemory::shortfall), never hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    /// The device's memory.
    pub total: u64,
    /// Free device memory when the last load started.
    pub free_before_load: u64,
    /// Free device memory after the last release since that load started;
    /// `None` until one.
    pub free_after_release: Option<u64>,
}

impl DeviceMemory {
    /// Bytes free before the last load and not free after its release
    /// (0 when as much or more is free); `None` until a release. Memory
    /// the process allocated on the device meanwhile (a CUDA library's
    /// workspace on first use, another model) counts too.
    pub fn shortfall(&self) -> Option<u64> {
        self.free_after_release
            .map(|after| self.free_before_load.saturating_sub(after))
    }
}

impl Ledger {
    pub(crate) fn resident(&self) -> u64 {
        self.resident.load(Ordering::Acquire)
    }

    pub(crate) fn unreclaimed(&self) -> u64 {
        self.unreclaimed.load(Ordering::Acquire)
    }

    pub(crate) fn device(&self) -> Option<DeviceMemory> {
        *self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record_device(&self, f: impl FnOnce(&mut Option<DeviceMemory>)) {
        f(&mut self.device.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Devices, memory accounting and the memory budget.
#[derive(Debug)]
pub(crate) struct ResourceManager {
    spec: DeviceSpec,
    device: Device,
    ledger: Arc<Ledger>,
    budget: Option<u64>,
    trim_heap: bool,
}

impl ResourceManager {
    pub(crate) fn new(spec: DeviceSpec, budget: Option<u64>, trim_heap: bool) -> Result<Self> {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if trim_heap {
            pin_trim_threshold();
        }
        Ok(ResourceManager {
            device: spec.open()?,
            spec,
            ledger: Arc::default(),
            budget,
            trim_heap,
        })
    }

    /// The counters snapshots read.
    pub(crate) fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Free and total memory of the device, as its driver reports them
    /// (CUDA only; `None` elsewhere or if the query fails).
    pub(crate) fn device_memory(&self) -> Option<(u64, u64)> {
        device_memory(&self.device)
    }

    /// A load is about to allocate: note the device's free memory.
    pub(crate) fn note_load_start(&self) {
        if let Some((free, total)) = self.device_memory() {
            self.ledger.record_device(|d| {
                *d = Some(DeviceMemory {
                    total,
                    free_before_load: free,
                    free_after_release: None,
                })
            });
        }
    }

    /// A release finished: synchronize the device, note its free memory,
    /// and say so when less came back than the load took.
    fn note_release(&self) {
        if self.device.is_cpu() {
            return;
        }
        if let Err(error) = self.synchronize() {
            tracing::warn!(%error, "device synchronisation after a release failed");
        }
        if let Some((free, total)) = self.device_memory() {
            let mut noted = None;
            self.ledger.record_device(|d| {
                let before = d.map_or(free, |d| d.free_before_load);
                let memory = DeviceMemory {
                    total,
                    free_before_load: before,
                    free_after_release: Some(free),
                };
                *d = Some(memory);
                noted = Some(memory);
            });
            // Logged outside the ledger's lock: a subscriber may read a
            // snapshot.
            if let Some(short) = noted.and_then(|m| m.shortfall()).filter(|&s| s > 2 << 20) {
                tracing::warn!(
                    shortfall = short,
                    "device memory after the release is {short} bytes short of before the load"
                );
            }
        }
    }

    /// After model memory was freed: hand the allocator's free pages back to
    /// the OS, and on a GPU synchronize and note the device's free memory.
    /// Tensors of up to 32 MiB come from glibc's heap once its dynamic mmap
    /// threshold has risen, and glibc keeps freed heap pages; without this,
    /// a small model's memory stays in the process after unload. Blocking
    /// (it walks the heap): call on a blocking thread.
    pub(crate) fn return_freed_memory(&self) {
        self.note_release();
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if self.trim_heap {
            // SAFETY: malloc_trim only returns free pages of the allocator's
            // own heap to the OS; it has no preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        let _ = self.trim_heap;
    }

    pub(crate) fn spec(&self) -> DeviceSpec {
        self.spec
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of model memory held right now.
    pub(crate) fn resident_bytes(&self) -> u64 {
        self.ledger.resident()
    }

    /// Check, before allocating anything, that the load's peak (`needed`
    /// bytes at once, conversions and staging included) fits.
    pub(crate) fn check_budget(&self, needed: u64) -> Result<()> {
        let available = match self.budget {
            Some(budget) => Some(budget.saturating_sub(self.resident_bytes())),
            None => self.available_on_device(),
        };
        match available {
            Some(available) if needed > available => Err(Error::InsufficientMemory {
                needed,
                available,
                pinned: 0,
            }),
            _ => Ok(()),
        }
    }

    /// Memory the device can still give, where it can be known.
    fn available_on_device(&self) -> Option<u64> {
        let free = free_memory(&self.device)?;
        // Pages a replaced model freed and the process keeps for this very
        // load (`crate::alloc`) are the kernel's free memory to come: the
        // load takes them, or they go back before it maps more.
        let kept = if self.device.is_cpu() {
            crate::alloc::retained_bytes()
        } else {
            0
        };
        Some(free.saturating_add(kept))
    }

    /// An empty reservation that counts bytes as they are allocated.
    pub(crate) fn reservation(&self) -> Reservation {
        Reservation {
            bytes: 0,
            ledger: self.ledger.clone(),
            abandoned: AtomicBool::new(false),
        }
    }

    /// Wait until the device has finished every queued free, so that the
    /// memory it reports is the memory actually returned.
    pub(crate) fn synchronize(&self) -> Result<()> {
        self.device.synchronize().map_err(Error::from)
    }
}

/// Set glibc's `M_TRIM_THRESHOLD` back to its default, 128 KiB, once per
/// process. `malloc_trim` returns the free chunks inside every arena and the
/// top of the main heap, but never the top chunk of a per-thread arena: only
/// `free` shrinks that, and only past `M_TRIM_THRESHOLD`, which glibc raises
/// to twice the largest mmapped block freed so far (16 MiB after a load of
/// 8 MiB buffers, up to 64 MiB). A model whose last buffers ended at such a
/// top kept 8 to 56 MiB after unload, depending on the allocation history.
/// Setting the threshold also freezes glibc's dynamic mmap threshold where
/// it is (128 KiB unless the process already freed larger mmapped blocks).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin_trim_threshold() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: mallopt sets one malloc parameter under the allocator's
        // lock; it has no preconditions.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
        }
    });
}

/// Bytes counted as resident while this value lives: grown when a buffer is
/// allocated, shrunk when one is freed, released on drop (when the buffers
/// it counts are dropped with it).
#[derive(Debug)]
pub(crate) struct Reservation {
    bytes: u64,
    ledger: Arc<Ledger>,
    abandoned: AtomicBool,
}

impl Reservation {
    pub(crate) fn grow(&mut self, bytes: u64) {
        self.ledger.resident.fetch_add(bytes, Ordering::AcqRel);
        self.bytes += bytes;
    }

    pub(crate) fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.ledger.resident.fetch_sub(bytes, Ordering::AcqRel);
        self.bytes -= bytes;
    }

    /// The manager let go of these bytes but something else (a lease that
    /// outlived shutdown's drain) keeps them alive: count them as
    /// unreclaimed until they are freed.
    pub(crate) fn abandon(&self) {
        if !self.abandoned.swap(true, Ordering::AcqRel) {
            self.ledger
                .unreclaimed
                .fetch_add(self.bytes, Ordering::AcqRel);
            self.ledger.resident.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let counter = if *self.abandoned.get_mut() {
            &self.ledger.unreclaimed
        } else {
            &self.ledger.resident
        };
        counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}
