// What the API returns: progress, snapshots, state changes, model info,
// tensors.

import type { Command, ErrorCode, ErrorCodeName, State } from './tables.js';

export interface Progress {
  /** Bytes of tensor data read so far. */
  bytesDone: number;
  /** Bytes of tensor data in the whole model. */
  bytesTotal: number;
  /** Tensors completely read so far. */
  tensorsDone: number;
  /** Tensors in the whole model. */
  tensorsTotal: number;
  /** The file (or `component: file`) being read, once known. */
  file: string | null;
}

export interface Snapshot {
  state: State;
  /** Increases with every transition; never repeats. */
  generation: number;
  /** Progress of the current load (or of the load that produced `ready`). */
  progress: Progress;
  /** Why the last load failed, in `failed`. */
  error: { code: ErrorCode; codeName: ErrorCodeName | 'Unknown'; message: string } | null;
  /**
   * Bytes of model memory held: counted when a buffer is allocated,
   * uncounted when it is freed. Always 0 in `idle` and `failed`: those
   * states are entered only once the memory is back.
   */
  residentBytes: number;
  /**
   * Bytes of an unloaded model still alive because something outlived the
   * manager's shutdown while holding it; 0 once it lets go.
   */
  unreclaimedBytes: number;
}

export interface StateChange {
  from: State;
  to: State;
  command: Command;
  /** The manager right after the transition. */
  snapshot: Snapshot;
}

/** A parsed JSON config (`config.json`, `model_index.json`, ...). */
export type Config = { [key: string]: unknown };

export interface ModelInfo {
  /** `sample_size` of the denoiser (`unet/`, `transformer/`) or the model. */
  sampleSize: number | null;
  /** Bytes of tensor data. */
  bytes: number;
  /** Number of tensors. */
  tensors: number;
  /** The top-level config (`config.json` or `model_index.json`). */
  config: Config | null;
}

export interface Component {
  /** `"model"` for a single model, else the folder name (`"unet"`). */
  name: string;
  config: Config | null;
  /** How many tensors it holds. */
  tensors: number;
}

export type Dtype = 'u8' | 'u32' | 'i16' | 'i32' | 'i64' | 'f16' | 'bf16' | 'f32' | 'f64';

/** A copy of one tensor's elements. */
export type Tensor =
  | { dtype: 'f32'; shape: number[]; data: Float32Array }
  | { dtype: 'f64'; shape: number[]; data: Float64Array }
  | { dtype: 'f16' | 'bf16'; shape: number[]; /** Raw bits. */ data: Uint16Array }
  | { dtype: 'i64'; shape: number[]; data: BigInt64Array }
  | { dtype: 'i32'; shape: number[]; data: Int32Array }
  | { dtype: 'u32'; shape: number[]; data: Uint32Array }
  | { dtype: 'i16'; shape: number[]; data: Int16Array }
  | { dtype: 'u8'; shape: number[]; data: Uint8Array };
