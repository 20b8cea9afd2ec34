// The Web Worker side of `WorkerModelManager` (js/worker-client.js): runs a
// ModelManager in this worker and answers the page's messages. Started by
// `new WorkerModelManager()`; not meant to be imported.
import init, { ModelManager } from './browser.js';

const ready = init();
let manager = null;
let unsubscribe = null;
const leases = new Map();
const loads = new Map();
let nextLease = 1;

/** What the page's synchronous getters read, sent with every message. */
function status() {
  if (manager === null || manager.freed) return null;
  return {
    snapshot: manager.snapshot,
    sampleSize: manager.sampleSize,
    info: manager.info,
    residentBytes: manager.residentBytes,
    outstandingLeases: manager.outstandingLeases,
  };
}

const post = (message, transfer = []) => self.postMessage({ ...message, status: status() }, transfer);

/** A source as sent by the page, back to what `load` takes. */
function revive(source) {
  if (source && source.__mmUrl !== undefined) return new URL(source.__mmUrl);
  if (source && source.__mmFiles !== undefined) {
    return Object.fromEntries(source.__mmFiles.map(([name, value]) => [name, revive(value)]));
  }
  return source;
}

const ops = {
  async create([options]) {
    manager = new ModelManager(options);
    unsubscribe = manager.onStateChange((event) => post({ event: 'state', value: event }));
  },
  async load([source, options, loadId]) {
    const abort = new AbortController();
    loads.set(loadId, abort);
    try {
      return await manager.load(revive(source), {
        ...options,
        signal: abort.signal,
        onProgress: (progress) => post({ event: 'progress', loadId, value: progress }),
      });
    } finally {
      loads.delete(loadId);
    }
  },
  async abortLoad([loadId]) {
    loads.get(loadId)?.abort(new DOMException('the page aborted the load', 'AbortError'));
  },
  async cancel() {
    return manager.cancel();
  },
  async unload() {
    await manager.unload();
  },
  async reset() {
    manager.reset();
  },
  async acquire() {
    const lease = manager.acquire();
    const id = nextLease++;
    leases.set(id, lease);
    return { id, names: lease.tensorNames(), info: lease.info, components: lease.components };
  },
  async tensor([id, name]) {
    const lease = leases.get(id);
    if (lease === undefined) return { value: undefined };
    const tensor = lease.tensor(name);
    // A fresh copy out of wasm memory: handed over, not copied again.
    return { value: tensor, transfer: tensor ? [tensor.data.buffer] : [] };
  },
  async release([id]) {
    leases.get(id)?.release();
    leases.delete(id);
  },
  async close() {
    unsubscribe?.();
    leases.clear();
    await manager?.close();
  },
  async clearCache() {
    return ModelManager.clearCache();
  },
};

self.onmessage = async ({ data }) => {
  const { id, op, args } = data;
  try {
    await ready;
    const result = await ops[op](args ?? []);
    if (op === 'tensor') post({ id, ok: true, value: result.value }, result.transfer);
    else post({ id, ok: true, value: result });
  } catch (error) {
    post({
      id,
      ok: false,
      error: { message: String(error?.message ?? error), code: error?.code ?? null },
    });
  }
};
