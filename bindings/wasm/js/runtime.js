// The raw wasm-bindgen exports, installed once by an entry point
// (browser.js, node.js) when the wasm module is instantiated.

/** @type {typeof import('../pkg/model_manager_wasm.js') | null} */
export let raw = null;

/** Called once by an entry point, when the wasm module is instantiated. */
export function install(module, pacer) {
  raw = module;
  raw.setPacer(pacer);
}
