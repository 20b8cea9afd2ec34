// In-memory sources: JS buffers (a safetensors file, or a folder's files)
// copied once into wasm memory as a RawSource.
import { raw } from './runtime.js';
import { call, invalid } from './errors.js';

const tag = (value) => Object.prototype.toString.call(value);

/** A view of the bytes of a Uint8Array, ArrayBuffer or any ArrayBufferView. */
export function bytesOf(value, what) {
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

export const isBytes = (value) =>
  ArrayBuffer.isView(value) ||
  tag(value) === '[object ArrayBuffer]' ||
  tag(value) === '[object SharedArrayBuffer]';

/** Copy a JS source into wasm memory (a RawSource): whether it fits is the
 * binding's to say (code 12), as for every allocation in wasm memory. */
export function rawSource(source) {
  if (isBytes(source)) {
    const bytes = bytesOf(source, 'source');
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
    buffers.push(bytesOf(value, `file ${JSON.stringify(name)}`));
  }
  return call(() => raw.RawSource.fromFiles(names, buffers));
}
