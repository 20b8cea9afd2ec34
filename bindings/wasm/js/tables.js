// Generated from model-manager's own tables (ErrorCode::ALL, State::ALL,
// Command::ALL, PoolEventKind::NAMES, UnloadReason::NAMES) by
// `MM_BLESS=1 cargo test -p model-manager-wasm tables`. Do not edit: a test
// fails when this file differs from the core.

/**
 * Stable numeric error codes, the same values as the C API's `mm_result`.
 * Values are never reused.
 */
export const ErrorCode = Object.freeze({
  InvalidArgument: 1,
  InvalidTransition: 2,
  Cancelled: 3,
  Superseded: 4,
  NotReady: 5,
  LeasesOutstanding: 6,
  Io: 7,
  InvalidModel: 8,
  InvalidConfig: 9,
  MissingFile: 10,
  PathEscape: 11,
  InsufficientMemory: 12,
  UnsupportedDtype: 13,
  Device: 14,
  ShutDown: 15,
  Assemble: 16,
  Timeout: 17,
  MemoryBusy: 18,
  QueueFull: 19,
  UnknownModel: 20,
});

/** The lifecycle's states. */
export const STATES = Object.freeze(['idle', 'loading', 'ready', 'unloading', 'failed']);

/** The commands a state may refuse. */
export const COMMANDS = Object.freeze(['load', 'finish', 'cancel', 'fail', 'unload', 'drain', 'reset']);

/** What a pool event reports. */
export const POOL_EVENT_KINDS = Object.freeze(['queued', 'loading', 'ready', 'failed', 'unloading', 'freed', 'parked', 'unparked']);

/** Why a pool unloads a model. */
export const UNLOAD_REASONS = Object.freeze(['evicted', 'expired', 'unloaded', 'replaced', 'madeRoomForReload']);
