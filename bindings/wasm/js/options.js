// Checks of the options a caller passes.
import { invalid } from './errors.js';

export function optionalNumber(value, name) {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw invalid(`${name} must be a number`);
  }
  return value;
}

/** Milliseconds (a finite number ≥ 0, or `Infinity` for never) or null. */
export function optionalMillis(value, name) {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw invalid(`${name} must be milliseconds (a number ≥ 0, or Infinity)`);
  }
  return value;
}
