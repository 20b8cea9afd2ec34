//! One error type for the whole library, with a stable numeric [`ErrorCode`].
//!
//! The numeric codes are shared by the C and JavaScript bindings: a value, once
//! given a meaning, is never reused for another.
//!
//! ```
//! use model_manager::{Error, ErrorCode};
//!
//! let err = Error::Cancelled;
//! assert_eq!(err.code(), ErrorCode::Cancelled);
//! assert_eq!(err.code() as u32, 3);
//! assert_eq!(err.code().name(), "Cancelled");
//! assert_eq!(ErrorCode::from_u32(3), Some(ErrorCode::Cancelled));
//! assert!(ErrorCode::ALL.windows(2).all(|w| (w[0] as u32) < (w[1] as u32)));
//! ```

use std::path::PathBuf;

use crate::lifecycle::{Command, State};

/// The result type used throughout model-manager.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Defines [`ErrorCode`] and its table ([`ErrorCode::ALL`], names,
/// numbers) from one list, so that no binding types them again.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $name:ident = $value:literal,)*) => {
        /// Stable numeric identity of an [`Error`], shared with the C and JS
        /// bindings.
        ///
        /// Values are explicit and never reused. `0` means success in the
        /// bindings. [`ErrorCode::ALL`] is the one table of codes: the C
        /// binding's `mm_result` and the JavaScript `ErrorCode` object are
        /// checked against it by their tests.
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $name = $value,)*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code's name, as every binding spells it
            /// (`"InvalidModel"`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => stringify!($name),)*
                }
            }
        }
    };
}

error_codes! {
    /// An argument was invalid (empty path, bad option value, ...).
    InvalidArgument = 1,
    /// The command is not legal in the current state.
    InvalidTransition = 2,
    /// The load was cancelled by `cancel()`, `unload()` or shutdown.
    Cancelled = 3,
    /// The load was replaced by a later `load()` of another model.
    Superseded = 4,
    /// A lease was asked for while the state was not `Ready`.
    NotReady = 5,
    /// An unload timed out with leases still held.
    LeasesOutstanding = 6,
    /// An I/O error while reading a model file.
    Io = 7,
    /// A weights file is malformed (bad header, offsets, truncated data).
    InvalidModel = 8,
    /// A JSON config file is malformed.
    InvalidConfig = 9,
    /// A file the model needs does not exist.
    MissingFile = 10,
    /// A file name points outside the model folder.
    PathEscape = 11,
    /// The model does not fit in the memory budget.
    InsufficientMemory = 12,
    /// A tensor has a dtype the device cannot hold.
    UnsupportedDtype = 13,
    /// The device failed (allocation, transfer, synchronisation).
    Device = 14,
    /// The manager has been shut down.
    ShutDown = 15,
    /// The user's pipeline could not be assembled from the loaded tensors.
    Assemble = 16,
    /// A bounded wait ran out of time.
    Timeout = 17,
    /// A pool's load waited past its deadline for memory that leased or
    /// loading models hold.
    MemoryBusy = 18,
    /// A pool's queue of loads waiting for memory is full.
    QueueFull = 19,
    /// No model of that id in the pool.
    UnknownModel = 20,
}

impl ErrorCode {
    /// The code with this number, if any.
    pub fn from_u32(value: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| *c as u32 == value)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in model-manager.
///
/// Errors are cheap to clone so they can be stored in snapshots and handed to
/// every waiter of a load.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument was invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The command is not legal in the current state.
    #[error("cannot {event} while {from}")]
    InvalidTransition {
        /// The state the manager was in.
        from: State,
        /// The command that was refused.
        event: Command,
    },
    /// The load was cancelled.
    #[error("load cancelled")]
    Cancelled,
    /// The load was replaced by a later request for another model.
    #[error("load superseded by a later request")]
    Superseded,
    /// A lease was asked for while the state was not `Ready`.
    #[error("no model ready (state is {0})")]
    NotReady(State),
    /// An unload timed out with leases still held.
    #[error("unload timed out with {count} lease(s) still held")]
    LeasesOutstanding {
        /// Leases held when the wait ended.
        count: usize,
    },
    /// An I/O error while reading a model file.
    #[error("{path}: {message}", path = .path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The operating system's description.
        message: String,
        /// What kind of failure it was (`PermissionDenied`, ...).
        kind: std::io::ErrorKind,
    },
    /// A weights file is malformed.
    #[error("{path}: {problem}", path = .path.display())]
    InvalidModel {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A JSON config file is malformed.
    #[error("{path}: invalid config: {problem}", path = .path.display())]
    InvalidConfig {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A file the model needs does not exist.
    #[error("{path}: no such file", path = .path.display())]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// Nothing to load where a source points, with what was found there
    /// and the way out: a folder without weights (the layouts looked for,
    /// the files seen), a repo or revision not in the hub cache (the
    /// command that fetches it), a missing path that looks like a repo id.
    /// Its code is [`ErrorCode::MissingFile`], as for [`Error::MissingFile`].
    #[error("{path}: {problem}", path = .path.display())]
    NotFound {
        /// The folder, file or cache entry looked in.
        path: PathBuf,
        /// What was found, and what to do.
        problem: String,
    },
    /// A file name points outside the model folder. The path is the name
    /// as the model writes it, joined to the model folder when relative.
    #[error("{path}: points outside the model folder", path = .path.display())]
    PathEscape {
        /// The offending path, as written in the model.
        path: PathBuf,
    },
    /// The model does not fit in the memory budget.
    #[error("model needs {needed} bytes but only {available} are available{}",
        if *.pinned > 0 { format!(" ({pinned} held by pinned models)") } else { String::new() })]
    InsufficientMemory {
        /// Bytes the model (or a lease's working-memory reserve) needs.
        needed: u64,
        /// Bytes left in the budget (in a pool: the budget less what
        /// pinned models hold).
        available: u64,
        /// In a pool, bytes held by pinned models, which are never evicted
        /// (0 outside a pool).
        pinned: u64,
    },
    /// A tensor has a dtype that cannot be loaded.
    #[error("{path}: tensor {tensor:?} has unsupported dtype {dtype}", path = .path.display())]
    UnsupportedDtype {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype as written in the file.
        dtype: String,
    },
    /// The device failed.
    #[error("device error: {0}")]
    Device(String),
    /// The manager has been shut down.
    #[error("the model manager has been shut down")]
    ShutDown,
    /// The user's pipeline could not be assembled from the loaded tensors.
    #[error("could not assemble the pipeline: {0}")]
    Assemble(String),
    /// A bounded wait ran out of time.
    #[error("timed out")]
    Timeout,
    /// A pool's load (or a lease's working-memory reserve) waited past its
    /// deadline for memory held by models that could not be evicted then
    /// (leased, or loading) or by other reserves.
    #[error("gave up waiting for {needed} bytes held by {}", blockers(.blocked_by))]
    MemoryBusy {
        /// Bytes the load (or the reserve) needs.
        needed: u64,
        /// What held the memory when the wait ended.
        blocked_by: Vec<Blocker>,
    },
    /// A pool's queue of loads waiting for memory is full.
    #[error("the load queue is full ({limit} loads waiting)")]
    QueueFull {
        /// The queue's size.
        limit: usize,
    },
    /// No model of this id in the pool.
    #[error("no model {0:?} in the pool")]
    UnknownModel(String),
}

/// A model that held memory a pool's load waited for
/// ([`Error::MemoryBusy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// The model's id in the pool.
    pub id: String,
    /// Bytes charged to it.
    pub bytes: u64,
    /// Leases held on it (0 for a model loading or unloading).
    pub leases: usize,
    /// Its state then.
    pub state: State,
}

fn blockers(list: &[Blocker]) -> String {
    if list.is_empty() {
        return "loads ahead in the queue".to_owned();
    }
    list.iter()
        .map(|b| {
            format!(
                "{:?} ({}, {} bytes, {} lease(s))",
                b.id, b.state, b.bytes, b.leases
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// The stable numeric code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::InvalidTransition { .. } => ErrorCode::InvalidTransition,
            Error::Cancelled => ErrorCode::Cancelled,
            Error::Superseded => ErrorCode::Superseded,
            Error::NotReady(_) => ErrorCode::NotReady,
            Error::LeasesOutstanding { .. } => ErrorCode::LeasesOutstanding,
            Error::Io { .. } => ErrorCode::Io,
            Error::InvalidModel { .. } => ErrorCode::InvalidModel,
            Error::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            Error::MissingFile { .. } | Error::NotFound { .. } => ErrorCode::MissingFile,
            Error::PathEscape { .. } => ErrorCode::PathEscape,
            Error::InsufficientMemory { .. } => ErrorCode::InsufficientMemory,
            Error::UnsupportedDtype { .. } => ErrorCode::UnsupportedDtype,
            Error::Device(_) => ErrorCode::Device,
            Error::ShutDown => ErrorCode::ShutDown,
            Error::Assemble(_) => ErrorCode::Assemble,
            Error::Timeout => ErrorCode::Timeout,
            Error::MemoryBusy { .. } => ErrorCode::MemoryBusy,
            Error::QueueFull { .. } => ErrorCode::QueueFull,
            Error::UnknownModel(_) => ErrorCode::UnknownModel,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, err: &std::io::Error) -> Self {
        let path = path.into();
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile { path }
        } else {
            Error::Io {
                path,
                message: err.to_string(),
                kind: err.kind(),
            }
        }
    }

    /// The I/O error kind, for [`Error::Io`] (and `NotFound` for
    /// [`Error::MissingFile`] and [`Error::NotFound`]).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Io { kind, .. } => Some(*kind),
            Error::MissingFile { .. } | Error::NotFound { .. } => {
                Some(std::io::ErrorKind::NotFound)
            }
            _ => None,
        }
    }

    /// A device this build cannot open: `feature` (`cuda`, `metal`) was
    /// not enabled when model-manager was built.
    pub(crate) fn device_not_built(device: &str, feature: &str) -> Self {
        Error::Device(format!(
            "{device}: model-manager was built without the `{feature}` feature; build with \
             `cargo build --features {feature}` (the command line: \
             `cargo run -p model-manager-cli --features {feature} -- ...`)"
        ))
    }

    pub(crate) fn invalid_model(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::InvalidModel {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(err: candle_core::Error) -> Self {
        // The message, without the backtrace candle attaches when
        // RUST_BACKTRACE is set.
        match err {
            candle_core::Error::WithBacktrace { inner, .. } => Error::from(*inner),
            err => Error::Device(err.to_string()),
        }
    }
}
