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

export * from './types/tables.js';
export * from './types/errors.js';
export * from './types/records.js';
export * from './types/sources.js';
export * from './types/manager.js';
export * from './types/worker.js';
export * from './types/pool.js';
