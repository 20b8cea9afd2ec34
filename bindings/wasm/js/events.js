// Subscriptions to a raw manager's or pool's events, and the disposal
// symbols the classes implement.
import { report } from './errors.js';

/**
 * Subscribe `callback` to `rawOwner`'s events (a raw manager's or pool's),
 * kept in `subscriptions` until the returned function unsubscribes (or the
 * owner is freed). An exception in `callback` is reported, stops nothing.
 */
export function listen(rawOwner, callback, subscriptions) {
  let subscription = rawOwner.subscribe((event) => {
    try {
      callback(event);
    } catch (error) {
      report(error);
    }
  });
  subscriptions.add(subscription);
  return () => {
    if (subscription === null) return;
    subscriptions.delete(subscription);
    subscription.close();
    subscription.free();
    subscription = null;
  };
}

export const disposeSymbol = Symbol.dispose ?? Symbol.for('Symbol.dispose');
export const asyncDisposeSymbol = Symbol.asyncDispose ?? Symbol.for('Symbol.asyncDispose');
