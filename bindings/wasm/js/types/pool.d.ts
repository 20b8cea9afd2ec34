// ModelPool: several models under one memory budget.

import type { Lease } from './manager.js';
import type { ModelSource } from './sources.js';
import type { ErrorCode, ErrorCodeName, State, UnloadReason } from './tables.js';

export interface ModelPoolOptions {
  /** Bytes all models together may hold (required). */
  memoryBudget: number;
  /** Default keep-alive in milliseconds; `null` or absent: forever. */
  keepAlive?: number | null;
  /** Loads that may wait for memory (default 64). */
  maxQueue?: number;
  /** Loads at once (default 1). */
  concurrentLoads?: number;
  /** Milliseconds a load waits for memory leases hold (default 60 000). */
  admissionTimeout?: number;
  /** Milliseconds a failed model answers its error instead of loading (default 5 000). */
  retryCooldown?: number;
  chunkSize?: number;
  dtype?: 'f32' | 'f16' | 'bf16';
  /** Bytes left to others: the budget is `memoryBudget` less this (default 0). */
  headroom?: number;
}

export interface ModelStatus {
  id: string;
  /** `ready` while a version serves leases (even while a reload loads). */
  state: State;
  version: number | null;
  loadingVersion: number | null;
  chargedBytes: number;
  residentBytes: number;
  leases: number;
  waiters: number;
  idleMs: number | null;
  keepAliveMs: number | null;
  expiresInMs: number | null;
  pinned: boolean;
  lastError: { code: ErrorCode; codeName: ErrorCodeName | 'Unknown'; message: string } | null;
}

export interface PoolSnapshot {
  budget: number;
  charged: number;
  queued: { id: string; version: number }[];
  unreclaimedBytes: number;
  models: ModelStatus[];
  counters: {
    loads: number;
    hits: number;
    misses: number;
    evictions: number;
    expirations: number;
    failures: number;
  };
}

export type PoolEvent = { id: string; version: number } & (
  | { kind: 'queued' }
  | { kind: 'loading'; charged: number }
  | { kind: 'ready'; bytes: number }
  | { kind: 'failed'; error: { code: ErrorCode; codeName: ErrorCodeName | 'Unknown'; message: string } }
  | { kind: 'unloading'; reason: UnloadReason; forId?: string }
  | { kind: 'freed'; bytes: number }
);

/**
 * Several models under one memory budget: loaded on demand, leased,
 * evicted (least recently used first; never while leased or pinned),
 * unloaded when their keep-alive runs out, reloaded without downtime.
 */
export declare class ModelPool {
  constructor(options: ModelPoolOptions);
  /** Make `source` known as `id`; loads nothing. */
  add(id: string, source: ModelSource, options?: { keepAlive?: number | null; pinned?: boolean }): void;
  /** One model per component with weights of a pipeline's files, as `id/component`; their ids. */
  addPipeline(id: string, source: ModelSource, options?: { keepAlive?: number | null; pinned?: boolean }): string[];
  /**
   * A lease on `id`, loading it if need be; `signal` stops waiting (code 3);
   * `workingBytes` reserved beside the model while the lease lives.
   */
  acquire(id: string, options?: { signal?: AbortSignal; workingBytes?: number }): Promise<Lease>;
  /** A lease on `id` if it is ready now; throws code 5 else. */
  tryAcquire(id: string): Lease;
  /** Load `id` now; resolves to its version. */
  load(id: string): Promise<number>;
  /** Load a new version beside the serving one; resolves to its number. */
  reload(id: string, source: ModelSource, options?: { unloadFirst?: boolean }): Promise<number>;
  /** Stop `id`'s load in flight; whether there was one. */
  cancel(id: string): boolean;
  /** Unload `id` (it stays known). */
  unload(id: string): Promise<void>;
  /** Unload `id`, then forget it. */
  remove(id: string): Promise<void>;
  pin(id: string): void;
  unpin(id: string): void;
  setKeepAlive(id: string, keepAlive: number | null): void;
  status(id: string): ModelStatus | null;
  readonly snapshot: PoolSnapshot;
  /** The counters in the Prometheus text format. */
  metricsText(): string;
  /** Every pool event from now on, in order; returns an unsubscribe function. */
  onEvent(callback: (event: PoolEvent) => void): () => void;
  readonly freed: boolean;
  free(): void;
  close(): Promise<void>;
  [Symbol.dispose](): void;
  [Symbol.asyncDispose](): Promise<void>;
}
