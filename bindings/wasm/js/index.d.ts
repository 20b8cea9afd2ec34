// Types of model-manager-wasm (the same API from the browser and the Node
// entry points).

/**
 * Instantiate the wasm module. Required once before `new ModelManager()` in
 * browsers and workers (later calls return the same promise); resolves at
 * once in Node, where importing the package instantiates it.
 *
 * @param input where to get `model_manager_wasm_bg.wasm` (browser only): a
 *   URL, a Response, its bytes or a compiled module; by default it is fetched
 *   from beside the package's JS files.
 */
export default function init(
  input?: string | URL | Request | Response | BufferSource | WebAssembly.Module,
): Promise<void>;
export { init };

/** The version of the wasm crate. */
export function version(): string;

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
export type PoolEventKind = 'queued' | 'loading' | 'ready' | 'failed' | 'unloading' | 'freed';
export type UnloadReason = 'evicted' | 'expired' | 'unloaded' | 'replaced' | 'madeRoomForReload';
// </tables>
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];
export type ErrorCodeName = keyof typeof ErrorCode;

/** Every error this package throws or rejects with. */
export declare class ModelManagerError extends Error {
  constructor(message: string, code: number, options?: { cause?: unknown });
  readonly name: 'ModelManagerError';
  /** The stable numeric code (see `ErrorCode`). */
  readonly code: ErrorCode;
  /** The code's name, such as `"InvalidModel"`. */
  readonly codeName: ErrorCodeName | 'Unknown';
}

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

/** Bytes of one file. Strings are accepted for JSON files of a folder. */
export type Bytes = Uint8Array | ArrayBuffer | SharedArrayBuffer | ArrayBufferView;

/**
 * What `load` takes: one safetensors file, or a model folder / diffusers
 * layout as file names (`"unet/config.json"`) mapped to their contents.
 */
export type ModelSource = Bytes | Record<string, Bytes | string> | Map<string, Bytes | string>;

/** One file of a streamed model: fetched (a URL string or `URL`, a
 * `Request`), or read (a `Response`, a `ReadableStream`, a `Blob` or `File`). */
export type StreamFile = string | URL | Request | Response | ReadableStream<Uint8Array> | Blob;

/**
 * What `load` streams: one safetensors file from a URL, a `Request`, a
 * `Response`, a `ReadableStream` or a `Blob`; a model folder on a server
 * (`{ baseUrl, files }`: the names, such as `"unet/config.json"`, are
 * resolved against `baseUrl`); or file names mapped to any of these or to
 * bytes (a string in such an object is a file's contents, not a URL: pass a
 * `URL`).
 */
export type StreamSource =
  | StreamFile
  | { baseUrl: string | URL; files: string[] }
  | Record<string, StreamFile | Bytes | string>
  | Map<string, StreamFile | Bytes | string>;

/** Progress of one file of a streamed load. */
export interface FileProgress {
  /** The file's name in the model (`unet/config.json`). */
  name: string;
  /** Where it comes from, once opened. */
  url: string | null;
  /** Bytes received (each is written into its place as it arrives). */
  bytesDone: number;
  /** `Content-Length` (or the Blob's size), when known. */
  bytesTotal: number | null;
  /** Whether it came from the Cache API. */
  cached: boolean;
}

/** Progress of a streamed load: download and load are one (each byte is
 * written into its tensor as it arrives). */
export interface StreamProgress {
  /** Bytes received so far, every file together. Never decreases. */
  bytesDone: number;
  /** Every file's length together, once each is known; else `null`. */
  bytesTotal: number | null;
  /** Tensors complete so far. Never decreases. */
  tensorsDone: number;
  /** Tensors of the weights files whose header has arrived. */
  tensorsTotal: number;
  /** The weights file being written. */
  file: string | null;
  /** Each file, in order. */
  files: FileProgress[];
}

export interface StreamLoadOptions {
  /** Called after every chunk written, and last with the totals. */
  onProgress?: (progress: StreamProgress) => void;
  /** Aborting it cancels the downloads and the load (code 3). */
  signal?: AbortSignal;
  /**
   * Keep downloaded files in the browser's Cache API, keyed by URL: a
   * later load of the same URL makes no request (`true`), or one
   * conditional request (`'revalidate'`: `If-None-Match` with the stored
   * ETag; a 304 reads the cached file, anything else downloads it again).
   * A cached file is checked against its stored length as it loads; when
   * the load fails with code 8 or 9, the files it read from (or stored in)
   * the cache are dropped from it. Rejects with code 1 where there is no
   * Cache API (Node).
   */
  cache?: boolean | 'revalidate';
  /** Fail with code 17 (Timeout) when a download sends nothing for this
   * many milliseconds (default 30000; 0 or Infinity: never). */
  stallTimeout?: number;
  /** The `fetch` to use (default `globalThis.fetch`). */
  fetch?: typeof fetch;
}

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
  /** A lease on `id`, loading it if need be; `signal` stops waiting (code 3). */
  acquire(id: string, options?: { signal?: AbortSignal }): Promise<Lease>;
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
