// The one error class of the package, its codes (the core's table,
// generated into tables.js), and how raw errors and callback errors are
// handled.
import { ErrorCode } from './tables.js';

export { ErrorCode };

const codeNames = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, k]));

/** Every error this package throws or rejects with. */
export class ModelManagerError extends Error {
  constructor(message, code, options) {
    super(message, options);
    this.name = 'ModelManagerError';
    /** The stable numeric code (see `ErrorCode`). */
    this.code = code;
    /** The code's name, such as `"InvalidModel"`. */
    this.codeName = codeNames[code] ?? 'Unknown';
  }
}

/** A raw error (a JS `Error` with a numeric `code`) as a ModelManagerError. */
export function wrap(error, options) {
  if (error instanceof ModelManagerError) return error;
  if (error && typeof error.code === 'number') {
    return new ModelManagerError(error.message, error.code, options);
  }
  return error;
}

/** Run `f`, re-throwing raw errors as ModelManagerError. */
export function call(f) {
  try {
    return f();
  } catch (error) {
    throw wrap(error);
  }
}

export function invalid(message) {
  return new ModelManagerError(`invalid argument: ${message}`, ErrorCode.InvalidArgument);
}

/** Report an exception thrown by a user callback without stopping anything. */
export function report(error) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(error);
  else console.error('model-manager: a callback threw:', error);
}
