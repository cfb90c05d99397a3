import { EventEmitter } from 'node:events';

/**
 * A typed event emitter in the mediasoup style: the event map is checked at
 * compile time, and `safeEmit` turns a listener's exception into a
 * `listenererror` event instead of unwinding into the socket handler that
 * emitted it (a throwing recorder listener must never stop the control client
 * from applying the next fact, least of all a closing one).
 */
export type EventMap = Record<string, unknown[]>;

type WithListenerError<E extends EventMap> = E & { listenererror: [eventName: string, error: unknown] };

export class TypedEmitter<E extends EventMap> {
  readonly #emitter = new EventEmitter();

  constructor() {
    // Many recorder components may listen to one client; the default warning
    // at 10 listeners would only be noise.
    this.#emitter.setMaxListeners(100);
  }

  on<K extends keyof WithListenerError<E> & string>(event: K, listener: (...args: WithListenerError<E>[K]) => void): this {
    this.#emitter.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof WithListenerError<E> & string>(event: K, listener: (...args: WithListenerError<E>[K]) => void): this {
    this.#emitter.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof WithListenerError<E> & string>(event: K, listener: (...args: WithListenerError<E>[K]) => void): this {
    this.#emitter.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  listenerCount<K extends keyof WithListenerError<E> & string>(event: K): number {
    return this.#emitter.listenerCount(event);
  }

  removeAllListeners(): void {
    this.#emitter.removeAllListeners();
  }

  /**
   * Emits to every listener in order. A throwing listener becomes a
   * `listenererror` event and does NOT stop the listeners after it: a closing
   * fact has to reach the recorder even if an unrelated metrics listener throws.
   */
  protected safeEmit<K extends keyof E & string>(event: K, ...args: E[K]): boolean {
    // rawListeners keeps `once` wrappers, so calling them also unregisters them.
    const listeners = this.#emitter.rawListeners(event) as ((...a: unknown[]) => void)[];
    for (const listener of listeners) {
      try {
        listener.apply(this, args);
      } catch (error) {
        try {
          this.#emitter.emit('listenererror', event, error);
        } catch {
          // A throwing listenererror listener has nowhere left to report to.
        }
      }
    }
    return listeners.length > 0;
  }
}
