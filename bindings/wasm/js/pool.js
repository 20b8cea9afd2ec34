// ModelPool: several models under one memory budget, over the core's
// RawPool.
import { raw } from './runtime.js';
import { ErrorCode, ModelManagerError, wrap, call, invalid, report } from './errors.js';
import { optionalNumber, optionalMillis } from './options.js';
import { rawSource } from './sources.js';
import { listen, disposeSymbol, asyncDisposeSymbol } from './events.js';
import { Lease } from './lease.js';

/** A byte count for the raw layer (which checks it is whole and not negative). */
function byteCount(value, name) {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number') throw invalid(`${name} must be a byte count, not ${typeof value}`);
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
   *   chunkSize?: number, dtype?: 'f32' | 'f16' | 'bf16', headroom?: number }} options
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
          byteCount(o.headroom, 'headroom'),
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
    // The pool keeps its own reference to the bytes in wasm memory.
    this.#addRaw(id, source, options, (pool, ...args) => pool.add(...args));
  }

  /**
   * Make the diffusers pipeline `source` (an object mapping its file names,
   * `model_index.json`, `unet/config.json`, ..., to bytes) known as one
   * model per component with weights, `id/component` (`sd/unet`,
   * `sd/vae`, ...), each loaded, leased and evicted on its own. Reads its
   * headers now; all or nothing. Returns the ids, in load order.
   *
   * @param {string} id
   * @param {*} source
   * @param {{ keepAlive?: number | null, pinned?: boolean }} [options]
   * @returns {string[]}
   */
  addPipeline(id, source, options = {}) {
    return this.#addRaw(id, source, options, (pool, ...args) => pool.addPipeline(...args));
  }

  /** `add` and `addPipeline`: `raw(pool, id, rawSource, keepAliveMs, keepForever, pinned)`. */
  #addRaw(id, source, options, raw) {
    const pool = this.#live();
    modelId(id);
    const { keepAlive, pinned } = options ?? {};
    const forever = keepAlive === null;
    const ms = forever ? null : optionalMillis(keepAlive, 'keepAlive');
    const rawSrc = rawSource(source);
    try {
      return call(() => raw(pool, id, rawSrc, ms, forever, pinned === true));
    } finally {
      rawSrc.free();
    }
  }

  /**
   * A lease on `id`: at once when it is ready, else once it is loaded (a
   * load in flight is joined; one is started, queued for memory, if none
   * is). `signal` stops waiting (rejects with code 3); the load goes on.
   * `workingBytes`: memory reserved beside the model for its inference
   * while the lease lives (unleased models are evicted to make room; code
   * MemoryBusy after the admission timeout, InsufficientMemory at once if
   * it can never fit).
   *
   * @param {string} id
   * @param {{ signal?: AbortSignal, workingBytes?: number }} [options]
   * @returns {Promise<Lease>}
   */
  acquire(id, options = {}) {
    const { signal, workingBytes } = options ?? {};
    let pending;
    try {
      const pool = this.#live();
      modelId(id);
      if (signal?.aborted) {
        throw new ModelManagerError('acquire cancelled: the signal was already aborted', ErrorCode.Cancelled, {
          cause: signal.reason,
        });
      }
      pending = pool.acquire(id, byteCount(workingBytes, 'workingBytes'));
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
