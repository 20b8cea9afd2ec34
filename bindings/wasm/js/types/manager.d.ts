// ModelManager and its leases.

import type { Component, ModelInfo, Progress, Snapshot, StateChange, Tensor } from './records.js';
import type { ModelSource, StreamLoadOptions, StreamSource } from './sources.js';
import type { State } from './tables.js';

export interface ModelManagerOptions {
  /** Bytes read between two turns of the event loop (default 1 MiB). */
  chunkSize?: number;
  /** Convert floating-point tensors while loading (integers keep theirs). */
  dtype?: 'f32' | 'f16' | 'bf16';
  /** Refuse models whose tensors need more bytes than this (code 12). */
  memoryBudget?: number;
}

export interface LoadOptions {
  /** Called as chunks are read (monotonic), and last with the totals. */
  onProgress?: (progress: Progress) => void;
  /** Aborting it cancels this load: the promise rejects with code 3. */
  signal?: AbortSignal;
}

/** A lease on the ready model: keeps it alive and readable until released. */
export declare class Lease {
  private constructor();
  /** Every tensor name (`component/name` in a diffusers pipeline). */
  tensorNames(): string[];
  /** A copy of tensor `name` (`component/name` picks a component). */
  tensor(name: string): Tensor | undefined;
  readonly info: ModelInfo;
  readonly components: Component[];
  readonly released: boolean;
  /** A pool lease's model version (`null` for a manager's lease). */
  readonly version: number | null;
  /** Working memory reserved with a pool lease (`acquire(id, { workingBytes })`); 0 otherwise. */
  readonly workingBytes: number;
  /** Let go of the model; an unload waiting for it may finish. Idempotent. */
  release(): void;
  /** Same as `release()`. */
  free(): void;
  [Symbol.dispose](): void;
}

/**
 * Owns the life of one model at a time: load with progress and
 * cancellation, leases, unload, state events.
 */
export declare class ModelManager {
  constructor(options?: ModelManagerOptions);
  /**
   * Load a model; resolves to the snapshot once ready. Latest request wins:
   * a load of another model rejects the previous one with code 4; loading
   * the same object again while it loads or is ready is not a reload.
   * Rejects with code 3 when cancelled (`cancel()`, `unload()`, the signal,
   * `free()`), or with the failure's code (8 for a malformed file, ...).
   */
  load(source: ModelSource, options?: LoadOptions): Promise<Snapshot>;
  /**
   * Stream a model: each file is fetched (or read) chunk by chunk into its
   * tensors' final place in wasm memory while the load runs; the model
   * needs its size in wasm memory, not twice. Rejects with code 10 on a
   * 404, 7 when a download fails (a dropped connection), 17 when one
   * stalls, 8 when a file is not what its header describes (truncated, a
   * wrong `Content-Length`), and as `load` does otherwise. Loading the
   * same source (the same object, or the same URL string) again while it
   * loads or is ready is not a reload.
   */
  load(source: StreamSource, options?: StreamLoadOptions): Promise<Snapshot>;
  /**
   * Cancel the load in flight; returns whether there was one. The state
   * stays `loading` until the load has freed what it read (at its next
   * chunk), then becomes `idle` and the load's promise rejects (code 3).
   */
  cancel(): boolean;
  /**
   * Unload, starting in this call; resolves once every lease is released
   * and the memory freed. While loading, cancels the load (which stays
   * `loading` until it has freed what it read). Rejects with code 2 when
   * idle or failed.
   */
  unload(): Promise<void>;
  /** `failed` -> `idle` (throws code 2 in other states). */
  reset(): void;
  /** A lease on the ready model (throws code 5 unless ready). */
  acquire(): Lease;
  readonly state: State;
  readonly snapshot: Snapshot;
  readonly sampleSize: number | null;
  readonly info: ModelInfo | null;
  /** Bytes of model memory held right now. */
  readonly residentBytes: number;
  /** Leases held right now. */
  readonly outstandingLeases: number;
  /** Whether `free()` has been called. */
  readonly freed: boolean;
  /** Every transition from now on, in order; returns an unsubscribe function. */
  onStateChange(callback: (change: StateChange) => void): () => void;
  /**
   * Cancel any load, release every lease handed out, stop every listener
   * and free the manager. Later calls throw, or reject, with code 15
   * (ShutDown). Idempotent. The model's memory is returned a few microtasks
   * later (see `close()`).
   */
  free(): void;
  /**
   * `free()`, resolving once the model's memory has been returned: at the
   * latest once a load in flight reaches its next chunk.
   */
  close(): Promise<void>;
  [Symbol.dispose](): void;
  [Symbol.asyncDispose](): Promise<void>;
  /** Delete every file `load(…, { cache: true })` kept; resolves to
   * whether there was a cache to delete. */
  static clearCache(): Promise<boolean>;
}
