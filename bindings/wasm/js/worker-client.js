// WorkerModelManager: the ModelManager API on the page, with the manager
// (its wasm memory, its downloads, its loads) in a Web Worker, so that no
// step of a load runs on the page's main thread.
import { ModelManagerError, ErrorCode } from './errors.js';

const isA = (value, name) => typeof globalThis[name] === 'function' && value instanceof globalThis[name];

/**
 * A source as a message can carry it: URLs resolved against the page (the
 * worker's own URL differs), a Response as its body stream, a Request as
 * its URL. Returns `[message, transfer]`.
 */
function portable(source) {
  const here = globalThis.location?.href;
  const tag = Object.prototype.toString.call(source);
  if (ArrayBuffer.isView(source) || tag === '[object ArrayBuffer]' || tag === '[object SharedArrayBuffer]') {
    return [source, []]; // copied into the message
  }
  if (typeof source === 'string') return [new URL(source, here).href, []];
  if (source instanceof URL) return [source.href, []];
  if (isA(source, 'Request')) return [source.url, []];
  if (isA(source, 'Response')) {
    if (source.body === null) return [new Uint8Array(0), []];
    return [source.body, [source.body]];
  }
  if (isA(source, 'ReadableStream')) return [source, [source]];
  if (source && typeof source === 'object' && Array.isArray(source.files) && source.baseUrl !== undefined) {
    return [{ baseUrl: new URL(String(source.baseUrl), here).href, files: [...source.files] }, []];
  }
  if (source && typeof source === 'object' && !ArrayBuffer.isView(source) && !isA(source, 'Blob')) {
    const entries = source instanceof Map ? [...source.entries()] : Object.entries(source);
    const transfer = [];
    const files = entries.map(([name, value]) => {
      if (typeof value === 'string') return [name, value]; // a file's contents
      if (value instanceof URL) return [name, { __mmUrl: value.href }];
      if (isA(value, 'Request')) return [name, { __mmUrl: value.url }];
      const [message, t] = portable(value);
      transfer.push(...t);
      return [name, message];
    });
    return [{ __mmFiles: files }, transfer];
  }
  return [source, []]; // bytes (copied into the message), a Blob
}

function revived(error) {
  return new ModelManagerError(error.message, error.code ?? ErrorCode.Device);
}

/** A lease held in the worker; `tensor()` resolves to a copy. */
export class WorkerLease {
  #manager;
  #id;
  #names;
  /** @internal */
  constructor(manager, { id, names, info, components }) {
    this.#manager = manager;
    this.#id = id;
    this.#names = names;
    this.info = info;
    this.components = components;
  }

  get released() {
    return this.#id === null;
  }

  tensorNames() {
    return [...this.#names];
  }

  /** `{ dtype, shape, data }` or `undefined`; the data is moved, not copied,
   * out of the worker. */
  tensor(name) {
    if (this.#id === null) {
      return Promise.reject(new ModelManagerError('invalid argument: this lease has been released', ErrorCode.InvalidArgument));
    }
    return this.#manager._call('tensor', [this.#id, name]);
  }

  /** Let go of the model. Idempotent; resolves once the worker has. */
  release() {
    if (this.#id === null) return Promise.resolve();
    const id = this.#id;
    this.#id = null;
    return this.#manager._call('release', [id]).catch(() => {});
  }
}

/**
 * The `ModelManager` API with the manager in a Web Worker. Commands return
 * promises (`cancel`, `reset` and `acquire` too); `state`, `snapshot`,
 * `sampleSize`, `info`, `residentBytes` and `outstandingLeases` are the
 * worker's as of its latest message (every reply and event carries them).
 */
export class WorkerModelManager {
  #worker;
  #pending = new Map();
  #next = 1;
  #status = null;
  #listeners = new Set();
  #progress = new Map();
  #closed = null;
  /** Set once the worker failed: every later call rejects with it. */
  #broken = null;

  /**
   * @param {object} [options] the ModelManager options (`chunkSize`, `dtype`, `memoryBudget`)
   * @param {{ worker?: Worker }} [setup] a Worker running this package's
   *   `js/worker.js` (by default one is started from beside this file)
   */
  constructor(options = {}, setup = {}) {
    this.#worker =
      setup.worker ?? new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'model-manager' });
    this.#worker.onmessage = ({ data }) => this.#receive(data);
    this.#worker.onerror = (event) => {
      event.preventDefault?.();
      this.#fail(new ModelManagerError(`the model-manager worker failed: ${event.message ?? event}`, ErrorCode.Device));
    };
    /** Resolves once the worker's manager exists (commands wait for it anyway). */
    this.ready = this._call('create', [options ?? {}]);
    this.ready.catch(() => {});
  }

  #receive(data) {
    if (data.status !== undefined && data.status !== null) this.#status = data.status;
    if (data.event === 'state') {
      for (const listener of this.#listeners) {
        try {
          listener(data.value);
        } catch (error) {
          (globalThis.reportError ?? console.error)(error);
        }
      }
      return;
    }
    if (data.event === 'progress') {
      this.#progress.get(data.loadId)?.(data.value);
      return;
    }
    const pending = this.#pending.get(data.id);
    if (pending === undefined) return;
    this.#pending.delete(data.id);
    if (data.ok) pending.resolve(data.value);
    else pending.reject(revived(data.error));
  }

  #fail(error) {
    this.#broken ??= error;
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
    // A failed worker serves nothing more: end it, and its memory with it.
    this.#worker?.terminate?.();
  }

  /** @internal */
  _call(op, args = [], transfer = []) {
    if (this.#closed !== null && op !== 'close') {
      return Promise.reject(new ModelManagerError('this ModelManager has been freed', ErrorCode.ShutDown));
    }
    if (this.#broken !== null) return Promise.reject(this.#broken);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      try {
        this.#worker.postMessage({ id, op, args }, transfer);
      } catch (error) {
        this.#pending.delete(id);
        reject(new ModelManagerError(`invalid argument: the source or an option cannot be sent to the worker: ${error.message}`, ErrorCode.InvalidArgument));
      }
    });
  }

  /** Same as `ModelManager.load`, run in the worker. */
  load(source, options = {}) {
    const { onProgress, signal, ...rest } = options ?? {};
    if (signal?.aborted) {
      return Promise.reject(
        new ModelManagerError('load cancelled: the signal was already aborted', ErrorCode.Cancelled, { cause: signal.reason }),
      );
    }
    let message;
    let transfer;
    try {
      [message, transfer] = portable(source);
    } catch (error) {
      return Promise.reject(error);
    }
    const loadId = this.#next++;
    if (typeof onProgress === 'function') {
      this.#progress.set(loadId, (p) => {
        try {
          onProgress(p);
        } catch (error) {
          (globalThis.reportError ?? console.error)(error);
        }
      });
    }
    const onAbort = () => this._call('abortLoad', [loadId]).catch(() => {});
    signal?.addEventListener('abort', onAbort, { once: true });
    return this._call('load', [message, rest, loadId], transfer).then(
      (snapshot) => {
        this.#progress.delete(loadId);
        signal?.removeEventListener('abort', onAbort);
        return snapshot;
      },
      (error) => {
        this.#progress.delete(loadId);
        signal?.removeEventListener('abort', onAbort);
        if (signal?.aborted) error.cause = signal.reason;
        throw error;
      },
    );
  }

  cancel() {
    return this._call('cancel');
  }

  unload() {
    return this._call('unload');
  }

  reset() {
    return this._call('reset');
  }

  /** Resolves to a WorkerLease (rejects with code 5 unless ready). */
  async acquire() {
    return new WorkerLease(this, await this._call('acquire'));
  }

  get state() {
    return this.#status?.snapshot.state ?? 'idle';
  }

  get snapshot() {
    return this.#status?.snapshot ?? null;
  }

  get sampleSize() {
    return this.#status?.sampleSize ?? null;
  }

  get info() {
    return this.#status?.info ?? null;
  }

  get residentBytes() {
    return this.#status?.residentBytes ?? 0;
  }

  get outstandingLeases() {
    return this.#status?.outstandingLeases ?? 0;
  }

  /** `cb({ from, to, command, snapshot })` for every transition, in order. */
  onStateChange(callback) {
    if (typeof callback !== 'function') {
      throw new ModelManagerError('invalid argument: onStateChange needs a function', ErrorCode.InvalidArgument);
    }
    this.#listeners.add(callback);
    return () => this.#listeners.delete(callback);
  }

  /** Frees the manager and ends the worker once it has. */
  close() {
    if (this.#closed !== null) return this.#closed;
    this.#listeners.clear();
    this.#closed = this._call('close')
      .catch(() => {})
      .then(() => {
        this.#worker.terminate();
        this.#fail(new ModelManagerError('this ModelManager has been freed', ErrorCode.ShutDown));
      });
    return this.#closed;
  }

  free() {
    this.close();
  }

  get freed() {
    return this.#closed !== null;
  }

  /** Same as `ModelManager.clearCache()` (the cache is the origin's). */
  static clearCache() {
    return import('./stream.js').then((m) => m.clearCache());
  }
}
