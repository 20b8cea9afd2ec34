// WorkerModelManager: the ModelManager API with the manager in a Web Worker.

import type { LoadOptions, ModelManagerOptions } from './manager.js';
import type { Component, ModelInfo, Snapshot, StateChange, Tensor } from './records.js';
import type { ModelSource, StreamLoadOptions, StreamSource } from './sources.js';
import type { State } from './tables.js';

/** A lease held in the worker of a `WorkerModelManager`. */
export declare class WorkerLease {
  readonly released: boolean;
  readonly info: ModelInfo;
  readonly components: Component[];
  tensorNames(): string[];
  /** A copy of the tensor, moved out of the worker. */
  tensor(name: string): Promise<Tensor | undefined>;
  release(): Promise<void>;
}

/**
 * The `ModelManager` API with the manager in a Web Worker (browsers): no
 * step of a load runs on the page's main thread. Commands return promises;
 * the getters give the worker's state as of its latest message.
 */
export declare class WorkerModelManager {
  /** `worker`: a Worker running this package's `js/worker.js` (by default
   * one is started from beside the package's JS). */
  constructor(options?: ModelManagerOptions, setup?: { worker?: Worker });
  /** Resolves once the worker's manager exists. */
  readonly ready: Promise<void>;
  load(source: ModelSource, options?: LoadOptions): Promise<Snapshot>;
  load(source: StreamSource, options?: StreamLoadOptions): Promise<Snapshot>;
  cancel(): Promise<boolean>;
  unload(): Promise<void>;
  reset(): Promise<void>;
  acquire(): Promise<WorkerLease>;
  readonly state: State;
  readonly snapshot: Snapshot | null;
  readonly sampleSize: number | null;
  readonly info: ModelInfo | null;
  readonly residentBytes: number;
  readonly outstandingLeases: number;
  readonly freed: boolean;
  onStateChange(callback: (change: StateChange) => void): () => void;
  /** Frees the manager, then ends the worker. */
  close(): Promise<void>;
  free(): void;
  static clearCache(): Promise<boolean>;
}
