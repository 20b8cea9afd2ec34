// The core's tables (error codes, states, commands, pool event kinds,
// unload reasons), rendered from the core by src/tables.rs.

// <tables: generated from the core, do not edit>
/** Stable numeric error codes, the same values as the C API's `mm_result`. */
export declare const ErrorCode: Readonly<{
  InvalidArgument: 1;
  InvalidTransition: 2;
  Cancelled: 3;
  Superseded: 4;
  NotReady: 5;
  LeasesOutstanding: 6;
  Io: 7;
  InvalidModel: 8;
  InvalidConfig: 9;
  MissingFile: 10;
  PathEscape: 11;
  InsufficientMemory: 12;
  UnsupportedDtype: 13;
  Device: 14;
  ShutDown: 15;
  Assemble: 16;
  Timeout: 17;
  MemoryBusy: 18;
  QueueFull: 19;
  UnknownModel: 20;
}>;
export type State = 'idle' | 'loading' | 'ready' | 'unloading' | 'failed';
export type Command = 'load' | 'finish' | 'cancel' | 'fail' | 'unload' | 'drain' | 'reset';
export type PoolEventKind = 'queued' | 'loading' | 'ready' | 'failed' | 'unloading' | 'freed' | 'parked' | 'unparked';
export type UnloadReason = 'evicted' | 'expired' | 'unloaded' | 'replaced' | 'madeRoomForReload';
// </tables>
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];
export type ErrorCodeName = keyof typeof ErrorCode;
