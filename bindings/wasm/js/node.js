// Node entry point: the wasm module is instantiated synchronously when this
// module is imported, so `new ModelManager()` works at once (`init()` is
// there for code shared with browsers and resolves immediately).
import { readFileSync } from 'node:fs';
import * as raw from '../pkg/model_manager_wasm.js';
import { install } from './core.js';

export { ModelManager, ModelPool, Lease, ModelManagerError, ErrorCode } from './core.js';

raw.initSync({
  module: readFileSync(new URL('../pkg/model_manager_wasm_bg.wasm', import.meta.url)),
});
// setImmediate: a macrotask after pending I/O and timers, with no clamp.
install(raw, () => new Promise((resolve) => setImmediate(resolve)));

/** Resolves at once: the module is already instantiated. */
export default function init() {
  return Promise.resolve();
}

export { init };

/** The version of the wasm crate. */
export const version = () => raw.version();
