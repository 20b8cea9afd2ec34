//! The plain C types: states, snapshots, events, tensors, options and the
//! callback signatures, with their conversions from the core's types.

use model_manager::candle_core::DType;
use model_manager::{Command, Progress, Snapshot, State, StateEvent};

use crate::mm_result;

/// The lifecycle state. The values are those of model-manager's `State` in
/// every binding (`mm_state_name` gives the core's name for each).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum mm_state {
    /// Nothing is loaded.
    Idle = 0,
    /// A model is being loaded.
    Loading = 1,
    /// A model is loaded and can be leased.
    Ready = 2,
    /// A model is being unloaded (waiting for leases, then freeing memory).
    Unloading = 3,
    /// The last load failed; `mm_snapshot.error` says why.
    Failed = 4,
}

impl From<State> for mm_state {
    fn from(state: State) -> Self {
        match state {
            State::Idle => mm_state::Idle,
            State::Loading => mm_state::Loading,
            State::Ready => mm_state::Ready,
            State::Unloading => mm_state::Unloading,
            State::Failed => mm_state::Failed,
        }
    }
}

/// What caused a transition.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum mm_command {
    /// A load was requested.
    Load = 0,
    /// A load finished.
    Finish = 1,
    /// A load was cancelled (by cancel, unload, a newer load or destroy).
    Cancel = 2,
    /// A load failed.
    Fail = 3,
    /// An unload was requested.
    Unload = 4,
    /// Every lease was released and the memory freed.
    Drain = 5,
    /// A failure was acknowledged (`mm_manager_reset`).
    Reset = 6,
}

impl From<Command> for mm_command {
    fn from(command: Command) -> Self {
        match command {
            Command::Load => mm_command::Load,
            Command::Finish => mm_command::Finish,
            Command::Cancel => mm_command::Cancel,
            Command::Fail => mm_command::Fail,
            Command::Unload => mm_command::Unload,
            Command::Drain => mm_command::Drain,
            Command::Reset => mm_command::Reset,
        }
    }
}

/// The element type of a tensor. Values are explicit and never reused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum mm_dtype {
    /// `uint8_t`.
    U8 = 0,
    /// `uint32_t`.
    U32 = 1,
    /// `int16_t`.
    I16 = 2,
    /// `int32_t`.
    I32 = 3,
    /// `int64_t`.
    I64 = 4,
    /// bfloat16, as `uint16_t` bits.
    Bf16 = 5,
    /// IEEE half precision, as `uint16_t` bits.
    F16 = 6,
    /// `float`.
    F32 = 7,
    /// `double`.
    F64 = 8,
    /// 8-bit float (4 exponent bits, 3 mantissa bits), as `uint8_t` bits.
    F8E4M3 = 9,
}

/// For `mm_manager_options.dtype`: keep every tensor's dtype as stored.
pub const MM_DTYPE_KEEP: u32 = u32::MAX;

impl mm_dtype {
    /// The candle dtype of a C one.
    pub fn to_candle(self) -> DType {
        match self {
            mm_dtype::U8 => DType::U8,
            mm_dtype::U32 => DType::U32,
            mm_dtype::I16 => DType::I16,
            mm_dtype::I32 => DType::I32,
            mm_dtype::I64 => DType::I64,
            mm_dtype::Bf16 => DType::BF16,
            mm_dtype::F16 => DType::F16,
            mm_dtype::F32 => DType::F32,
            mm_dtype::F64 => DType::F64,
            mm_dtype::F8E4M3 => DType::F8E4M3,
        }
    }

    /// The C dtype of a candle dtype, if it has one.
    pub fn from_candle(dtype: DType) -> Option<Self> {
        Some(match dtype {
            DType::U8 => mm_dtype::U8,
            DType::U32 => mm_dtype::U32,
            DType::I16 => mm_dtype::I16,
            DType::I32 => mm_dtype::I32,
            DType::I64 => mm_dtype::I64,
            DType::BF16 => mm_dtype::Bf16,
            DType::F16 => mm_dtype::F16,
            DType::F32 => mm_dtype::F32,
            DType::F64 => mm_dtype::F64,
            DType::F8E4M3 => mm_dtype::F8E4M3,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            mm_dtype::U8 | mm_dtype::F8E4M3 => 1,
            mm_dtype::I16 | mm_dtype::Bf16 | mm_dtype::F16 => 2,
            mm_dtype::U32 | mm_dtype::I32 | mm_dtype::F32 => 4,
            mm_dtype::I64 | mm_dtype::F64 => 8,
        }
    }
}

/// How far a load has come.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct mm_progress {
    /// Bytes of tensor data read so far.
    pub bytes_done: u64,
    /// Bytes of tensor data in the whole model.
    pub bytes_total: u64,
    /// Tensors completely read so far.
    pub tensors_done: u64,
    /// Tensors in the whole model.
    pub tensors_total: u64,
}

impl From<&Progress> for mm_progress {
    fn from(p: &Progress) -> Self {
        mm_progress {
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            tensors_done: p.tensors_done,
            tensors_total: p.tensors_total,
        }
    }
}

/// A consistent view of the manager at one moment.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct mm_snapshot {
    /// The lifecycle state.
    pub state: mm_state,
    /// Increases with every transition; never repeats.
    pub generation: u64,
    /// Progress of the current load (or of the load that produced Ready;
    /// zero in Idle and Failed).
    pub progress: mm_progress,
    /// In Failed, why the last load failed (`mm_manager_error_message` gives
    /// the text); else `MM_RESULT_OK`.
    pub error: mm_result,
    /// Bytes of model memory the manager holds: counted when a buffer is
    /// allocated, uncounted when it is freed. Always 0 in Idle and Failed:
    /// those states are entered only once the memory is back (so after a
    /// cancel the state stays Loading until the load has freed what it
    /// read).
    pub resident_bytes: u64,
    /// Bytes of an unloaded model still alive because a lease outlived the
    /// drain timeout of `mm_manager_destroy`: no longer the manager's, not
    /// hidden either. Falls to 0 when the last such lease is released.
    pub unreclaimed_bytes: u64,
    /// On a CUDA device, the driver's figures (read after synchronizing the
    /// device): its memory, its free memory when the last load started, and
    /// after the last release (an unload, a cancelled or failed load). All
    /// three 0 on the CPU, and the last 0 until a release. Less free after
    /// a release than before the load is a shortfall the library also logs.
    pub device_total_bytes: u64,
    /// See `device_total_bytes`.
    pub device_free_before_load: u64,
    /// See `device_total_bytes`.
    pub device_free_after_release: u64,
}

impl From<&Snapshot> for mm_snapshot {
    fn from(s: &Snapshot) -> Self {
        mm_snapshot {
            state: s.state.into(),
            generation: s.generation,
            progress: (&s.progress).into(),
            error: s
                .error
                .as_ref()
                .map_or(mm_result::Ok, |e| mm_result::from(e.code())),
            resident_bytes: s.resident_bytes,
            unreclaimed_bytes: s.unreclaimed_bytes,
            device_total_bytes: s.device_memory.map_or(0, |d| d.total),
            device_free_before_load: s.device_memory.map_or(0, |d| d.free_before_load),
            device_free_after_release: s
                .device_memory
                .and_then(|d| d.free_after_release)
                .unwrap_or(0),
        }
    }
}

/// One transition, as delivered to an `mm_event_callback`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct mm_event {
    /// The state left.
    pub from: mm_state,
    /// The state entered (also `snapshot.state`).
    pub to: mm_state,
    /// What caused it.
    pub command: mm_command,
    /// Transitions this subscriber missed just before this one because it
    /// fell more than 1024 behind (usually 0).
    pub missed: u64,
    /// The manager right after the transition.
    pub snapshot: mm_snapshot,
}

impl mm_event {
    /// The C event for a core event, after `missed` lost ones.
    pub fn new(event: &StateEvent, missed: u64) -> Self {
        mm_event {
            from: event.from.into(),
            to: event.to.into(),
            command: event.command.into(),
            missed,
            snapshot: (&event.snapshot).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mirror is pinned to the core's table: every state and command
    /// keeps the core's number, and every number the core knows maps back.
    /// (A state or command added to the core fails to compile the `From`
    /// matches above before it gets here.)
    #[test]
    fn states_and_commands_keep_their_numbers() {
        for (i, s) in State::ALL.into_iter().enumerate() {
            assert_eq!(s as u32, i as u32, "State::ALL is in numeric order");
            assert_eq!(mm_state::from(s) as u32, s as u32, "{s:?}");
            assert_eq!(State::from_u32(mm_state::from(s) as u32), Some(s));
        }
        assert_eq!(State::from_u32(State::ALL.len() as u32), None);
        for (i, c) in Command::ALL.into_iter().enumerate() {
            assert_eq!(c as u32, i as u32, "Command::ALL is in numeric order");
            assert_eq!(mm_command::from(c) as u32, c as u32, "{c:?}");
        }
    }

    #[test]
    fn dtypes_map_with_their_sizes() {
        for d in [
            DType::U8,
            DType::U32,
            DType::I16,
            DType::I32,
            DType::I64,
            DType::BF16,
            DType::F16,
            DType::F32,
            DType::F64,
            DType::F8E4M3,
        ] {
            let c = mm_dtype::from_candle(d).expect("mapped");
            assert_eq!(c.size(), d.size_in_bytes(), "{d:?}");
        }
        assert_eq!(mm_dtype::from_candle(DType::F4), None);
    }

    #[test]
    fn snapshot_translates_error_and_progress() {
        let snapshot = Snapshot {
            state: State::Failed,
            generation: 7,
            model: None,
            progress: Progress {
                bytes_done: 1,
                bytes_total: 2,
                tensors_done: 3,
                tensors_total: 4,
                ..Progress::default()
            },
            error: Some(model_manager::Error::Timeout),
            resident_bytes: 5,
            unreclaimed_bytes: 6,
            device_memory: None,
        };
        let c = mm_snapshot::from(&snapshot);
        assert_eq!(c.state, mm_state::Failed);
        assert_eq!(c.generation, 7);
        assert_eq!(
            c.progress,
            mm_progress {
                bytes_done: 1,
                bytes_total: 2,
                tensors_done: 3,
                tensors_total: 4
            }
        );
        assert_eq!(c.error, mm_result::Timeout);
        assert_eq!((c.resident_bytes, c.unreclaimed_bytes), (5, 6));
        assert_eq!(
            (
                c.device_total_bytes,
                c.device_free_before_load,
                c.device_free_after_release
            ),
            (0, 0, 0),
            "no device figures on the CPU"
        );
        let on_gpu = mm_snapshot::from(&Snapshot {
            device_memory: Some(model_manager::DeviceMemory {
                total: 100,
                free_before_load: 80,
                free_after_release: Some(79),
            }),
            ..snapshot.clone()
        });
        assert_eq!(
            (
                on_gpu.device_total_bytes,
                on_gpu.device_free_before_load,
                on_gpu.device_free_after_release
            ),
            (100, 80, 79)
        );
        let event = StateEvent {
            from: State::Loading,
            to: State::Failed,
            command: Command::Fail,
            snapshot,
        };
        let e = mm_event::new(&event, 2);
        assert_eq!(
            (e.from, e.to, e.command, e.missed),
            (mm_state::Loading, mm_state::Failed, mm_command::Fail, 2)
        );
    }
}
