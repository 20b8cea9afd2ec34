// The JavaScript API of model-manager, over the raw wasm-bindgen exports.
// Shared by the browser entry (browser.js) and the Node entry (node.js),
// which instantiate the wasm module and call `install`. One module per
// concept: runtime.js (the raw exports), errors.js, options.js, sources.js
// (in-memory sources), stream.js (streamed sources), events.js, lease.js,
// manager.js, pool.js.

export { install } from './runtime.js';
export { ErrorCode, ModelManagerError } from './errors.js';
export { Lease } from './lease.js';
export { ModelManager } from './manager.js';
export { ModelPool } from './pool.js';
