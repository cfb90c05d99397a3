import { EventEmitter } from 'node:events';

/**
 * An EventEmitter with a typed event map, after mediasoup's EnhancedEventEmitter: `safeEmit`
 * turns a listener's exception into a `listenererror` event instead of unwinding into the
 * storage code that emitted it (a buggy metrics listener must not fail an upload).
 */
export class TypedEmitter<E extends Record<string, unknown[]>> extends EventEmitter {
  override on<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }

  override once<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    return super.once(event, listener as (...args: unknown[]) => void);
  }

  override off<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    return super.off(event, listener as (...args: unknown[]) => void);
  }

  safeEmit<K extends keyof E & string>(event: K, ...args: E[K]): boolean {
    try {
      return super.emit(event, ...args);
    } catch (err) {
      try {
        super.emit('listenererror', event, err);
      } catch {
        // A failing listenererror listener has nowhere left to report to.
      }
      return true;
    }
  }
}
