// The JavaScript API of model-manager, over the raw wasm-bindgen exports.
// Shared by the browser entry (browser.js) and the Node entry (node.js),
// which instantiate the wasm module and call `install`.

import {
  isStreamSource,
  streamFiles,
  pump,
  clearCache as clearStreamCache,
  forgetCached,
  DEFAULT_STALL_TIMEOUT,
} from './stream.js';

import { ErrorCode, ModelManagerError } from './errors.js';

export { ErrorCode, ModelManagerError };

/** @type {typeof import('../pkg/model_manager_wasm.js') | null} */
let raw = null;

/** Called once by an entry point, when the wasm module is instantiated. */
export function install(module, pacer) {
  raw = module;
  raw.setPacer(pacer);
}

/** A raw error (a JS `Error` with a numeric `code`) as a ModelManagerError. */
function wrap(error, options) {
  if (error instanceof ModelManagerError) return error;
  if (error && typeof error.code === 'number') {
    return new ModelManagerError(error.message, error.code, options);
  }
  return error;
}

/** Run `f`, re-throwing raw errors as ModelManagerError. */
function call(f) {
  try {
    return f();
  } catch (error) {
    throw wrap(error);
  }
}

function invalid(message) {
  return new ModelManagerError(`invalid argument: ${message}`, ErrorCode.InvalidArgument);
}

/** Report an exception thrown by a user callback without stopping anything. */
function report(error) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(error);
  else console.error('model-manager: a callback threw:', error);
}

const tag = (value) => Object.prototype.toString.call(value);

/** A view of the bytes of a Uint8Array, ArrayBuffer or any ArrayBufferView. */
function bytesOf(value, what) {
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  const t = tag(value);
  if (t === '[object ArrayBuffer]' || t === '[object SharedArrayBuffer]') {
    return new Uint8Array(value);
  }
  if (typeof value === 'string' && what !== 'source') {
    return new TextEncoder().encode(value);
  }
  throw invalid(`${what} must be a Uint8Array or an ArrayBuffer`);
}

const isBytes = (value) =>
  ArrayBuffer.isView(value) ||
  tag(value) === '[object ArrayBuffer]' ||
  tag(value) === '[object SharedArrayBuffer]';

/** wasm32 can hold no buffer of 2 GiB or more. */
const MAX_BUFFER = 2 ** 31 - 1;

function fits(bytes, what) {
  if (bytes.byteLength > MAX_BUFFER) {
    throw new ModelManagerError(
      `${what} holds ${bytes.byteLength} bytes; wasm memory holds at most ${MAX_BUFFER} in one buffer`,
      ErrorCode.InsufficientMemory,
    );
  }
  return bytes;
}

/** Copy a JS source into wasm memory (a RawSource). */
function rawSource(source) {
  if (isBytes(source)) {
    const bytes = fits(bytesOf(source, 'source'), 'the model');
    return call(() => raw.RawSource.fromBytes(bytes));
  }
  let entries;
  if (source instanceof Map) entries = [...source.entries()];
  else if (source !== null && typeof source === 'object') entries = Object.entries(source);
  else {
    throw invalid(
      'source must be a Uint8Array or ArrayBuffer holding a safetensors file, ' +
        'or an object mapping file names to such buffers',
    );
  }
  const names = [];
  const buffers = [];
  for (const [name, value] of entries) {
    if (typeof name !== 'string') throw invalid('file names must be strings');
    names.push(name);
    buffers.push(fits(bytesOf(value, `file ${JSON.stringify(name)}`), name));
  }
  return call(() => raw.RawSource.fromFiles(names, buffers));
}

function optionalNumber(value, name) {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw invalid(`${name} must be a number`);
  }
  return value;
}

/**
 * Subscribe `callback` to `rawOwner`'s events (a raw manager's or pool's),
 * kept in `subscriptions` until the returned function unsubscribes (or the
 * owner is freed). An exception in `callback` is reported, stops nothing.
 */
function listen(rawOwner, callback, subscriptions) {
  let subscription = rawOwner.subscribe((event) => {
    try {
      callback(event);
    } catch (error) {
      report(error);
    }
  });
  subscriptions.add(subscription);
  return () => {
    if (subscription === null) return;
    subscriptions.delete(subscription);
    subscription.close();
    subscription.free();
    subscription = null;
  };
}

const disposeSymbol = Symbol.dispose ?? Symbol.for('Symbol.dispose');
const asyncDisposeSymbol = Symbol.asyncDispose ?? Symbol.for('Symbol.asyncDispose');

/** A lease on the ready model; see `ModelManager.acquire`. */
export class Lease {
  #raw;
  #onRelease;

  /** @internal */
  constructor(rawLease, onRelease) {
    this.#raw = rawLease;
    this.#onRelease = onRelease;
  }

  #live() {
    if (this.#raw === null) {
      throw new ModelManagerError(
        'invalid argument: this lease has been released',
        ErrorCode.InvalidArgument,
      );
    }
    return this.#raw;
  }

  /** Every tensor name (`component/name` in a diffusers pipeline). */
  tensorNames() {
    return call(() => this.#live().tensorNames());
  }

  /** `{ dtype, shape, data }` for tensor `name`, or `undefined`. */
  tensor(name) {
    if (typeof name !== 'string') throw invalid('a tensor name must be a string');
    return call(() => this.#live().tensor(name));
  }

  /** The model's config facts: `{ sampleSize, bytes, tensors, config }`. */
  get info() {
    return call(() => this.#live().info);
  }

  /** The model's components: `[{ name, config, tensors }]`. */
  get components() {
    return call(() => this.#live().components);
  }

  /** Whether the lease has been released. */
  get released() {
    return this.#raw === null;
  }

  /** A pool lease's model version (`null` for a manager's lease). */
  get version() {
    return call(() => this.#live().version) ?? null;
  }

  /** Let go of the model (an unload waiting for it may finish). Idempotent. */
  release() {
    const lease = this.#raw;
    if (lease === null) return;
    this.#raw = null;
    lease.release();
    lease.free();
    this.#onRelease?.(this);
  }

  /** Same as `release()`. */
  free() {
    this.release();
  }

  [disposeSymbol]() {
    this.release();
  }
}

/**
 * Owns the life of one model at a time: load with progress and
 * cancellation, leases, unload, events.
 */
export class ModelManager {
  #raw;
  /** Leases handed out and not released: `free()` releases them. */
  #leases = new Set();
  /** Listeners' raw subscriptions (kept referenced while subscribed). */
  #subscriptions = new Set();
  /** The JS object and RawSource of the model loading or ready. */
  #current = null;
  #watcher;
  #closed = null;

  /**
   * @param {{ chunkSize?: number, dtype?: 'f32' | 'f16' | 'bf16', memoryBudget?: number }} [options]
   */
  constructor(options = {}) {
    if (raw === null) {
      throw new ModelManagerError(
        'the wasm module is not initialised yet: `await init()` before creating a ModelManager',
        ErrorCode.InvalidArgument,
      );
    }
    const { chunkSize, dtype, memoryBudget } = options ?? {};
    const chunk = optionalNumber(chunkSize, 'chunkSize');
    const budget = optionalNumber(memoryBudget, 'memoryBudget');
    if (dtype !== undefined && dtype !== null && typeof dtype !== 'string') {
      throw invalid('dtype must be "f32", "f16" or "bf16"');
    }
    this.#raw = call(() => new raw.RawManager(chunk, dtype ?? null, budget));
    // Forget the current source once nothing is loading or loaded, so its
    // copy in wasm memory is freed with the model.
    this.#watcher = this.#raw.subscribe(({ to }) => {
      if ((to === 'idle' || to === 'failed') && this.#raw !== null) {
        const state = this.#raw.state;
        if (state === 'idle' || state === 'failed') this.#forgetSource();
      }
    });
  }

  #live() {
    if (this.#raw === null) {
      throw new ModelManagerError(
        'this ModelManager has been freed',
        ErrorCode.ShutDown,
      );
    }
    return this.#raw;
  }

  #forgetSource() {
    this.#current?.source.free();
    this.#current = null;
  }

  /** The source to hand the core: the same RawSource for the same object
   * while it is loading or loaded, so that loading it again is no reload. */
  #sourceFor(source) {
    const current = this.#current;
    if (current !== null && current.key === source) {
      const state = this.#raw.state;
      if (state === 'loading' || state === 'ready' || state === 'unloading') return current.source;
    }
    return rawSource(source);
  }

  /**
   * Load a model: a `Uint8Array` / `ArrayBuffer` holding one safetensors
   * file, or an object (or Map) mapping file names to such buffers (a model
   * folder or a diffusers layout). Resolves to the snapshot once ready;
   * rejects with a ModelManagerError (code 3 when cancelled or aborted, 4
   * when superseded by another load, 8 for a malformed file, ...).
   *
   * @param {*} source
   * @param {{ onProgress?: (p: object) => void, signal?: AbortSignal }} [options]
   */
  load(source, options = {}) {
    if (isStreamSource(source)) return this.#loadStream(source, options ?? {});
    const { onProgress, signal } = options ?? {};
    let handle;
    try {
      const manager = this.#live();
      if (onProgress !== undefined && onProgress !== null && typeof onProgress !== 'function') {
        throw invalid('onProgress must be a function');
      }
      if (signal?.aborted) {
        throw new ModelManagerError('load cancelled: the signal was already aborted', ErrorCode.Cancelled, {
          cause: signal.reason,
        });
      }
      const rawSrc = this.#sourceFor(source);
      try {
        handle = call(() => manager.load(rawSrc));
      } catch (error) {
        if (rawSrc !== this.#current?.source) rawSrc.free();
        throw error;
      }
      if (rawSrc !== this.#current?.source) {
        this.#forgetSource();
        this.#current = { key: source, source: rawSrc };
      }
    } catch (error) {
      return Promise.reject(error);
    }
    const onAbort = () => handle.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    const progress =
      typeof onProgress === 'function'
        ? (p) => {
            try {
              onProgress(p);
            } catch (error) {
              report(error);
            }
          }
        : null;
    return handle.wait(progress).then(
      (snapshot) => {
        signal?.removeEventListener('abort', onAbort);
        handle.free();
        return snapshot;
      },
      (error) => {
        signal?.removeEventListener('abort', onAbort);
        handle.free();
        throw wrap(error, signal?.aborted ? { cause: signal.reason } : undefined);
      },
    );
  }

  /** A streamed source: downloads (or reads) its files chunk by chunk into
   * their tensors while the load runs. */
  #loadStream(source, options) {
    const {
      onProgress,
      signal,
      cache = false,
      stallTimeout = DEFAULT_STALL_TIMEOUT,
      fetch: fetchFn = globalThis.fetch,
    } = options;
    let handle;
    let writer = null;
    let files;
    try {
      const manager = this.#live();
      if (onProgress !== undefined && onProgress !== null && typeof onProgress !== 'function') {
        throw invalid('onProgress must be a function');
      }
      if (typeof stallTimeout !== 'number' || !(stallTimeout >= 0)) {
        throw invalid('stallTimeout must be a number of milliseconds (0 or Infinity: no limit)');
      }
      if (typeof fetchFn !== 'function') throw invalid('fetch must be a function');
      if (cache && !globalThis.caches) {
        throw invalid('cache: the Cache API is not available here (a browser or a worker, in a secure context)');
      }
      if (signal?.aborted) {
        throw new ModelManagerError('load cancelled: the signal was already aborted', ErrorCode.Cancelled, {
          cause: signal.reason,
        });
      }
      files = streamFiles(source);
      const current = this.#current;
      const state = manager.state;
      if (current !== null && current.key === source && (state === 'loading' || state === 'ready' || state === 'unloading')) {
        // The same source (object, or URL string) is not loaded again.
        handle = call(() => manager.load(current.source));
      } else {
        const rawSrc = call(() => raw.RawSource.stream());
        writer = rawSrc.takeWriter();
        try {
          handle = call(() => manager.load(rawSrc));
        } catch (error) {
          writer.free();
          rawSrc.free();
          throw error;
        }
        this.#forgetSource();
        // A stream is read once: a cancelled or unloaded stream load is
        // never joined again (see cancel() and unload()).
        this.#current = { key: source, source: rawSrc, stream: true };
      }
    } catch (error) {
      return Promise.reject(error);
    }
    const downloads = new AbortController();
    const onAbort = () => {
      handle.cancel();
      downloads.abort(signal.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let latest = null;
    const emit = (files, final) => {
      const p = handle.progress;
      const totals = files.map((f) => f.bytesTotal);
      const progress = {
        bytesDone: files.reduce((sum, f) => sum + f.bytesDone, 0),
        bytesTotal: totals.includes(null) ? null : totals.reduce((a, b) => a + b, 0),
        tensorsDone: p.tensorsDone,
        tensorsTotal: p.tensorsTotal,
        file: p.file,
        files: files.map((f) => ({ ...f })),
      };
      if (final) progress.bytesTotal = progress.bytesDone;
      if (typeof onProgress === 'function') {
        try {
          onProgress(progress);
        } catch (error) {
          report(error);
        }
      }
    };
    const progressOf = (files) => {
      latest = files;
      emit(files, false);
    };
    let failure = null;
    const cached = { urls: new Set(), stores: [] };
    const pumped =
      writer === null
        ? Promise.resolve(null)
        : pump(writer, files, {
            signal: downloads.signal,
            cache: cache === 'revalidate' ? cache : !!cache,
            stallTimeout,
            fetch: fetchFn,
            progress: progressOf,
            failed: (error) => {
              failure = error;
            },
            cached,
          }).finally(() => writer.free());
    pumped.catch(() => {});
    const settle = () => {
      signal?.removeEventListener('abort', onAbort);
      downloads.abort();
    };
    return handle.wait(null).then(
      (snapshot) => {
        settle();
        if (latest !== null) emit(latest, true);
        handle.free();
        return snapshot;
      },
      async (error) => {
        settle();
        handle.free();
        if (error?.code === ErrorCode.InvalidModel || error?.code === ErrorCode.InvalidConfig) {
          // A file read from (or stored in) the cache is not what it should
          // be: the next load downloads it again.
          await forgetCached(cached).catch(() => {});
        }
        // The download's own error says more (the URL, the status).
        if (failure !== null && failure.code === error.code) throw failure;
        throw wrap(error, signal?.aborted ? { cause: signal.reason } : undefined);
      },
    );
  }

  /** Delete every file `load(url, { cache: true })` kept in the browser's
   * Cache API. Resolves to whether there was anything to delete. */
  static clearCache() {
    return clearStreamCache();
  }

  /** Cancel the load in flight (or waiting for an unload). Returns whether
   * there was one. The state stays `loading` until the load has freed what
   * it read (at its next chunk); then it is `idle` and the load's promise
   * rejects with code 3. */
  cancel() {
    const cancelled = this.#live().cancel();
    if (this.#current?.stream) this.#forgetSource();
    return cancelled;
  }

  /** Unload the model, starting in this call: resolves once every lease is
   * released and its memory freed. While loading, cancels the load (which
   * stays `loading` until it has freed what it read). Rejects with code 2
   * when idle or failed, 15 after `free()`. */
  unload() {
    let promise;
    try {
      promise = this.#live().unload();
      if (this.#current?.stream) this.#forgetSource();
    } catch (error) {
      return Promise.reject(wrap(error));
    }
    return promise.then(
      () => undefined,
      (error) => {
        throw wrap(error);
      },
    );
  }

  /** Acknowledge a failure: `failed` -> `idle` (code 2 in other states). */
  reset() {
    call(() => this.#live().reset());
  }

  /** A lease on the ready model (throws code 5, NotReady, unless ready). */
  acquire() {
    const rawLease = call(() => this.#live().acquire());
    const lease = new Lease(rawLease, (l) => this.#leases.delete(l));
    this.#leases.add(lease);
    return lease;
  }

  /** `"idle" | "loading" | "ready" | "unloading" | "failed"`. */
  get state() {
    return this.#live().state;
  }

  /** `{ state, generation, progress, error, residentBytes,
   * unreclaimedBytes }`, a consistent view. */
  get snapshot() {
    return this.#live().snapshot;
  }

  /** `sample_size` from the ready model's config, else `null`. */
  get sampleSize() {
    return this.#live().sampleSize ?? null;
  }

  /** `{ sampleSize, bytes, tensors, config }` of the ready model, else `null`. */
  get info() {
    return this.#live().info;
  }

  /** Bytes of model memory held right now. */
  get residentBytes() {
    return this.#live().residentBytes;
  }

  /** Leases held right now. */
  get outstandingLeases() {
    return this.#live().outstandingLeases;
  }

  /**
   * Call `callback({ from, to, command, snapshot })` for every transition
   * from now on, in order. Returns a function that unsubscribes.
   */
  onStateChange(callback) {
    const manager = this.#live();
    if (typeof callback !== 'function') throw invalid('onStateChange needs a function');
    return listen(manager, callback, this.#subscriptions);
  }

  /** Whether `free()` has been called. */
  get freed() {
    return this.#raw === null;
  }

  /**
   * Cancel any load, release every lease this manager handed out, stop
   * every listener, and free the manager. A load in flight rejects with
   * code 3. Any later call throws (code 15, ShutDown). Idempotent. The
   * model's memory is returned a few microtasks later; `close()` says when.
   */
  free() {
    this.close().catch(report);
  }

  /** `free()`, resolving once every task of the manager has ended and the
   * model's memory is back in the wasm allocator. */
  close() {
    const manager = this.#raw;
    if (manager === null) return this.#closed ?? Promise.resolve();
    this.#raw = null;
    for (const lease of [...this.#leases]) lease.release();
    this.#leases.clear();
    for (const subscription of [this.#watcher, ...this.#subscriptions]) {
      subscription.close();
      subscription.free();
    }
    this.#subscriptions.clear();
    this.#forgetSource();
    // Cancels a load and starts the unload at once; the rest finishes in
    // the background.
    const done = manager.shutdown();
    manager.free();
    this.#closed = done.then(() => undefined);
    return this.#closed;
  }

  [disposeSymbol]() {
    this.free();
  }

  [asyncDisposeSymbol]() {
    return this.close();
  }
}

/** Milliseconds (a finite number ≥ 0, or `Infinity` for never) or null. */
function optionalMillis(value, name) {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw invalid(`${name} must be milliseconds (a number ≥ 0, or Infinity)`);
  }
  return value;
}

function modelId(id) {
  if (typeof id !== 'string' || id.length === 0) throw invalid('a model id must be a non-empty string');
  return id;
}

/**
 * Several models under one memory budget: each loaded on demand, leased,
 * evicted (least recently used first, never while leased or pinned) when
 * another needs the room, unloaded when its keep-alive runs out, and
 * reloaded without downtime. The same semantics as the Rust `ModelPool`.
 */
export class ModelPool {
  #raw;
  #leases = new Set();
  #subscriptions = new Set();
  #closed = null;

  /**
   * @param {{ memoryBudget: number, keepAlive?: number | null, maxQueue?: number,
   *   concurrentLoads?: number, admissionTimeout?: number, retryCooldown?: number,
   *   chunkSize?: number, dtype?: 'f32' | 'f16' | 'bf16' }} options
   */
  constructor(options = {}) {
    if (raw === null) {
      throw new ModelManagerError(
        'the wasm module is not initialised yet: `await init()` before creating a ModelPool',
        ErrorCode.InvalidArgument,
      );
    }
    const o = options ?? {};
    if (typeof o.memoryBudget !== 'number' || !Number.isFinite(o.memoryBudget) || o.memoryBudget < 0) {
      throw invalid('memoryBudget (bytes) is required');
    }
    if (o.dtype !== undefined && o.dtype !== null && typeof o.dtype !== 'string') {
      throw invalid('dtype must be "f32", "f16" or "bf16"');
    }
    this.#raw = call(
      () =>
        new raw.RawPool(
          o.memoryBudget,
          optionalMillis(o.keepAlive, 'keepAlive'),
          optionalNumber(o.maxQueue, 'maxQueue'),
          optionalNumber(o.concurrentLoads, 'concurrentLoads'),
          optionalMillis(o.admissionTimeout, 'admissionTimeout'),
          optionalMillis(o.retryCooldown, 'retryCooldown'),
          optionalNumber(o.chunkSize, 'chunkSize'),
          o.dtype ?? null,
        ),
    );
  }

  #live() {
    if (this.#raw === null) {
      throw new ModelManagerError('this ModelPool has been freed', ErrorCode.ShutDown);
    }
    return this.#raw;
  }

  #lease(rawLease) {
    const lease = new Lease(rawLease, (l) => this.#leases.delete(l));
    this.#leases.add(lease);
    return lease;
  }

  /**
   * Make `source` (what `ModelManager.load` takes from memory: a safetensors
   * file's bytes, or an object mapping file names to bytes) known as `id`.
   * Loads nothing: the first `acquire` does. `keepAlive`: milliseconds,
   * `null` for forever, absent for the pool's default; `pinned`: never
   * evicted.
   *
   * @param {string} id
   * @param {*} source
   * @param {{ keepAlive?: number | null, pinned?: boolean }} [options]
   */
  add(id, source, options = {}) {
    const pool = this.#live();
    modelId(id);
    const { keepAlive, pinned } = options ?? {};
    const forever = keepAlive === null;
    const ms = forever ? null : optionalMillis(keepAlive, 'keepAlive');
    const rawSrc = rawSource(source);
    try {
      // The pool keeps its own reference to the bytes in wasm memory.
      call(() => pool.add(id, rawSrc, ms, forever, pinned === true));
    } finally {
      rawSrc.free();
    }
  }

  /**
   * A lease on `id`: at once when it is ready, else once it is loaded (a
   * load in flight is joined; one is started, queued for memory, if none
   * is). `signal` stops waiting (rejects with code 3); the load goes on.
   *
   * @param {string} id
   * @param {{ signal?: AbortSignal }} [options]
   * @returns {Promise<Lease>}
   */
  acquire(id, options = {}) {
    const { signal } = options ?? {};
    let pending;
    try {
      const pool = this.#live();
      modelId(id);
      if (signal?.aborted) {
        throw new ModelManagerError('acquire cancelled: the signal was already aborted', ErrorCode.Cancelled, {
          cause: signal.reason,
        });
      }
      pending = pool.acquire(id);
    } catch (error) {
      return Promise.reject(wrap(error));
    }
    const onAbort = () => pending.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    return pending.promise.then(
      (rawLease) => {
        signal?.removeEventListener('abort', onAbort);
        pending.free();
        if (this.#raw === null) {
          // Freed while waiting: hand nothing out.
          rawLease.release();
          rawLease.free();
          throw new ModelManagerError('this ModelPool has been freed', ErrorCode.ShutDown);
        }
        return this.#lease(rawLease);
      },
      (error) => {
        signal?.removeEventListener('abort', onAbort);
        pending.free();
        throw wrap(error, signal?.aborted ? { cause: signal.reason } : undefined);
      },
    );
  }

  /** A lease on `id` if it is ready now; throws code 5 (NotReady) else. */
  tryAcquire(id) {
    const pool = this.#live();
    modelId(id);
    return this.#lease(call(() => pool.tryAcquire(id)));
  }

  /** Load `id` now (unless ready or loading); resolves to its version. */
  load(id) {
    try {
      modelId(id);
      return this.#live()
        .load(id)
        .catch((error) => {
          throw wrap(error);
        });
    } catch (error) {
      return Promise.reject(wrap(error));
    }
  }

  /**
   * Load `source` as the next version of `id` beside the serving one:
   * leases keep their version, new leases get the new one once it is
   * ready. Resolves to the new version. A failed reload leaves the old
   * version serving. When both cannot fit: rejects with code 12, unless
   * `unloadFirst` (then the old version is unloaded first: downtime).
   *
   * @param {string} id
   * @param {*} source
   * @param {{ unloadFirst?: boolean }} [options]
   * @returns {Promise<number>}
   */
  reload(id, source, options = {}) {
    try {
      const pool = this.#live();
      modelId(id);
      const rawSrc = rawSource(source);
      let promise;
      try {
        promise = pool.reload(id, rawSrc, options?.unloadFirst === true);
      } finally {
        rawSrc.free();
      }
      return promise.catch((error) => {
        throw wrap(error);
      });
    } catch (error) {
      return Promise.reject(wrap(error));
    }
  }

  /** Stop `id`'s load in flight; whether there was one. */
  cancel(id) {
    const pool = this.#live();
    modelId(id);
    return call(() => pool.cancel(id));
  }

  /** Unload `id`, starting now: resolves once its leases are released and
   * its memory freed. It stays known (a later acquire loads it again). */
  unload(id) {
    try {
      modelId(id);
      return this.#live()
        .unload(id)
        .then(
          () => undefined,
          (error) => {
            throw wrap(error);
          },
        );
    } catch (error) {
      return Promise.reject(wrap(error));
    }
  }

  /** `unload(id)`, then forget it. */
  remove(id) {
    try {
      modelId(id);
      return this.#live()
        .remove(id)
        .then(
          () => undefined,
          (error) => {
            throw wrap(error);
          },
        );
    } catch (error) {
      return Promise.reject(wrap(error));
    }
  }

  /** Never evict `id` (nor let its keep-alive unload it). */
  pin(id) {
    const pool = this.#live();
    modelId(id);
    call(() => pool.setPinned(id, true));
  }

  /** Undo `pin(id)`. */
  unpin(id) {
    const pool = this.#live();
    modelId(id);
    call(() => pool.setPinned(id, false));
  }

  /** `id`'s keep-alive in milliseconds (`null`: forever). */
  setKeepAlive(id, keepAlive) {
    const pool = this.#live();
    modelId(id);
    const ms = keepAlive === null ? null : optionalMillis(keepAlive, 'keepAlive');
    if (ms === null && keepAlive !== null) throw invalid('keepAlive must be milliseconds or null');
    call(() => pool.setKeepAlive(id, ms));
  }

  /** `{ id, state, version, loadingVersion, chargedBytes, residentBytes,
   * leases, waiters, idleMs, keepAliveMs, expiresInMs, pinned, lastError }`,
   * or `null` for an unknown id. */
  status(id) {
    const pool = this.#live();
    modelId(id);
    return pool.status(id);
  }

  /** `{ budget, charged, queued, unreclaimedBytes, models, counters }`. */
  get snapshot() {
    return this.#live().snapshot;
  }

  /** The counters in the Prometheus text format. */
  metricsText() {
    return this.#live().metricsText();
  }

  /**
   * Call `callback({ id, version, kind, ... })` for every pool event from
   * now on, in order (`kind`: queued, loading, ready, failed, unloading —
   * with a `reason` —, freed). Returns a function that unsubscribes.
   */
  onEvent(callback) {
    const pool = this.#live();
    if (typeof callback !== 'function') throw invalid('onEvent needs a function');
    return listen(pool, callback, this.#subscriptions);
  }

  /** Whether `free()` has been called. */
  get freed() {
    return this.#raw === null;
  }

  /** Stop every load, release every lease this pool handed out, stop every
   * listener, unload every model. Later calls throw code 15. */
  free() {
    this.close().catch(report);
  }

  /** `free()`, resolving once every task of the pool has ended. */
  close() {
    const pool = this.#raw;
    if (pool === null) return this.#closed ?? Promise.resolve();
    this.#raw = null;
    for (const lease of [...this.#leases]) lease.release();
    this.#leases.clear();
    for (const subscription of this.#subscriptions) {
      subscription.close();
      subscription.free();
    }
    this.#subscriptions.clear();
    // Like a manager's: the shutdown holds its own reference, so the raw
    // pool is freed at once (nothing is left behind if the shutdown fails).
    const done = pool.shutdown();
    pool.free();
    this.#closed = done.then(() => undefined);
    return this.#closed;
  }

  [disposeSymbol]() {
    this.free();
  }

  [asyncDisposeSymbol]() {
    return this.close();
  }
}
