// Lease: a model kept alive while the caller uses it.
import { ErrorCode, ModelManagerError, call, invalid } from './errors.js';
import { disposeSymbol } from './events.js';

/** A lease on the ready model; see `ModelManager.acquire`. */
export class Lease {
  #raw;
  #onRelease;

  /** @internal */
  constructor(rawLease, onRelease) {
    this.#raw = rawLease;
    this.#onRelease = onRelease;
  }

  #live() {
    if (this.#raw === null) {
      throw new ModelManagerError(
        'invalid argument: this lease has been released',
        ErrorCode.InvalidArgument,
      );
    }
    return this.#raw;
  }

  /** Every tensor name (`component/name` in a diffusers pipeline). */
  tensorNames() {
    return call(() => this.#live().tensorNames());
  }

  /** `{ dtype, shape, data }` for tensor `name`, or `undefined`. */
  tensor(name) {
    if (typeof name !== 'string') throw invalid('a tensor name must be a string');
    return call(() => this.#live().tensor(name));
  }

  /** The model's config facts: `{ sampleSize, bytes, tensors, config }`. */
  get info() {
    return call(() => this.#live().info);
  }

  /** The model's components: `[{ name, config, tensors }]`. */
  get components() {
    return call(() => this.#live().components);
  }

  /** Whether the lease has been released. */
  get released() {
    return this.#raw === null;
  }

  /** A pool lease's model version (`null` for a manager's lease). */
  get version() {
    return call(() => this.#live().version) ?? null;
  }

  /** Working memory reserved with this lease (a pool's `acquire(id, { workingBytes })`); 0 otherwise. */
  get workingBytes() {
    return call(() => this.#live().workingBytes);
  }

  /** Let go of the model (an unload waiting for it may finish). Idempotent. */
  release() {
    const lease = this.#raw;
    if (lease === null) return;
    this.#raw = null;
    lease.release();
    lease.free();
    this.#onRelease?.(this);
  }

  /** Same as `release()`. */
  free() {
    this.release();
  }

  [disposeSymbol]() {
    this.release();
  }
}
