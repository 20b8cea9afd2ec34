// Browser (and web worker) entry point: `await init()` once, then use the API.
import initWasm, * as raw from '../pkg/model_manager_wasm.js';
import { install } from './core.js';

export { ModelManager, ModelPool, Lease, ModelManagerError, ErrorCode } from './core.js';
export { WorkerModelManager, WorkerLease } from './worker-client.js';

/**
 * A turn of the event loop: a MessageChannel post is a macrotask without the
 * 4 ms clamp of nested `setTimeout(0)`, so rendering, input, timers and abort
 * listeners get to run between two chunks at almost no cost.
 */
function messageChannelPacer() {
  if (typeof MessageChannel === 'undefined') {
    return () => new Promise((resolve) => setTimeout(resolve, 0));
  }
  const channel = new MessageChannel();
  const waiting = [];
  channel.port1.onmessage = () => waiting.shift()?.();
  return () =>
    new Promise((resolve) => {
      waiting.push(resolve);
      channel.port2.postMessage(null);
    });
}

let ready = null;

/**
 * Instantiate the wasm module (once; later calls return the same promise).
 * `input` is optional: the URL of `model_manager_wasm_bg.wasm`, a Response,
 * bytes or a compiled `WebAssembly.Module`; by default the file is fetched
 * from beside the package's JS.
 */
export default function init(input) {
  ready ??= initWasm(input === undefined ? undefined : { module_or_path: input }).then(
    () => {
      install(raw, messageChannelPacer());
    },
    (error) => {
      ready = null;
      throw error;
    },
  );
  return ready;
}

export { init };

/** The version of the wasm crate. */
export const version = () => raw.version();
