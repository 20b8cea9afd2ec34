// The one error class of the package, and its codes (the core's table,
// generated into tables.js).
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
