// ModelManager: one model's lifecycle, over the core's RawManager.
import { raw } from './runtime.js';
import { ErrorCode, ModelManagerError, wrap, call, invalid, report } from './errors.js';
import { optionalNumber } from './options.js';
import { rawSource } from './sources.js';
import { listen, disposeSymbol, asyncDisposeSymbol } from './events.js';
import { isStreamSource, streamFiles, streamProgress, pump, forgetCached, DEFAULT_STALL_TIMEOUT } from './stream.js';
import { clearCache as clearStreamCache } from './stream.js';
import { Lease } from './lease.js';

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
      // The same object while it is loading or loaded: the core's decision
      // (no copy, no reload); else a copy in wasm memory, which the manager
      // takes.
      handle =
        call(() => manager.join(source)) ?? call(() => manager.loadFrom(source, rawSource(source)));
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
      // The same source (object, or URL string) while it is loading or
      // loaded joins that load (the core's decision); else a new stream.
      handle = call(() => manager.join(source));
      if (handle === undefined) {
        const rawSrc = call(() => raw.RawSource.stream());
        writer = rawSrc.takeWriter();
        try {
          handle = call(() => manager.loadFrom(source, rawSrc));
        } catch (error) {
          writer.free();
          throw error;
        }
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
      const progress = streamProgress(files, handle.progress, final);
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
    return this.#live().cancel();
  }

  /** Unload the model, starting in this call: resolves once every lease is
   * released and its memory freed. While loading, cancels the load (which
   * stays `loading` until it has freed what it read). Rejects with code 2
   * when idle or failed, 15 after `free()`. */
  unload() {
    let promise;
    try {
      promise = this.#live().unload();
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
    for (const subscription of this.#subscriptions) {
      subscription.close();
      subscription.free();
    }
    this.#subscriptions.clear();
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
