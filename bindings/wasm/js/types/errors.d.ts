// The one error class.

import type { ErrorCode, ErrorCodeName } from './tables.js';

/** Every error this package throws or rejects with. */
export declare class ModelManagerError extends Error {
  constructor(message: string, code: number, options?: { cause?: unknown });
  readonly name: 'ModelManagerError';
  /** The stable numeric code (see `ErrorCode`). */
  readonly code: ErrorCode;
  /** The code's name, such as `"InvalidModel"`. */
  readonly codeName: ErrorCodeName | 'Unknown';
}
