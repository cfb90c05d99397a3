import { EventEmitter } from 'node:events';

/**
 * The one event emitter of the library, after mediasoup's EnhancedEventEmitter: a typed event map
 * checked at compile time, and `safeEmit`, which calls every listener in order and turns a
 * listener's exception into a `listenererror` event instead of unwinding into the code that
 * emitted it. A throwing metrics listener must never stop the control client from applying the
 * next fact (least of all a closing one), nor fail an upload.
 *
 * Use `safeEmit` for every event; plain `emit` is kept only for Node's own semantics where a
 * caller needs them (an `error` event with no listener throws).
 */
export type EventMap = Record<string, unknown[]>;

type WithListenerError<E extends EventMap> = E & { listenererror: [eventName: string, error: unknown] };

export class TypedEmitter<E extends EventMap> extends EventEmitter {
  constructor() {
    super();
    // Many components may listen to one source; the default warning at 10 listeners is noise.
    this.setMaxListeners(100);
  }

  override on<K extends keyof WithListenerError<E> & string>(event: K, listener: (...args: WithListenerError<E>[K]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }

  override once<K extends keyof WithListenerError<E> & string>(event: K, listener: (...args: WithListenerError<E>[K]) => void): this {
    return super.once(event, listener as (...args: unknown[]) => void);
  }

  override off<K extends keyof WithListenerError<E> & string>(event: K, listener: (...args: WithListenerError<E>[K]) => void): this {
    return super.off(event, listener as (...args: unknown[]) => void);
  }

  /**
   * Emits to every listener in order. A throwing listener becomes a `listenererror` event and does
   * NOT stop the listeners after it.
   */
  safeEmit<K extends keyof E & string>(event: K, ...args: E[K]): boolean {
    // rawListeners keeps `once` wrappers, so calling them also unregisters them.
    const listeners = this.rawListeners(event) as ((...a: unknown[]) => void)[];
    for (const listener of listeners) {
      try {
        listener.apply(this, args);
      } catch (error) {
        try {
          super.emit('listenererror', event, error);
        } catch {
          // A throwing listenererror listener has nowhere left to report to.
        }
      }
    }
    return listeners.length > 0;
  }
}
