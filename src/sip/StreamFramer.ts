/**
 * Cuts a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3: on a stream transport the
 * Content-Length header is mandatory and is the only way to find the end of the body).
 *
 * Bounded: it never holds more than one message's worth of bytes (`maxMessageBytes`); a peer that
 * sends a header section without an end, a missing or absurd Content-Length, or a body over the
 * bound gets an error, after which the connection must be closed (there is no way to resynchronise
 * a stream whose framing is lost). CRLF keep-alives (RFC 5626 §3.5.1) between messages are
 * reported so the transport can answer a double-CRLF ping with a single CRLF pong.
 */
import { findHeaderEnd, type SipLimits } from './parseMessage.ts';

export type FramerOutput = { type: 'message'; data: Buffer } | { type: 'ping' } | { type: 'error'; detail: string };

const CONTENT_LENGTH = /^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*$/im;

export class StreamFramer {
  readonly #limits: SipLimits;
  #buf: Buffer = Buffer.alloc(0);
  #failed = false;

  constructor(limits: SipLimits) {
    this.#limits = limits;
  }

  /** Feeds bytes; returns the complete messages (and pings) they finish, in order. */
  push(chunk: Buffer): FramerOutput[] {
    if (this.#failed) return [];
    const out: FramerOutput[] = [];
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    for (;;) {
      // Keep-alives: CRLF runs between messages. A double CRLF is a ping (RFC 5626 §3.5.1).
      let skip = 0;
      while (skip < this.#buf.length && (this.#buf[skip] === 0x0d || this.#buf[skip] === 0x0a)) skip++;
      if (skip > 0) {
        if (skip >= 4 && this.#buf.subarray(0, 4).toString('latin1') === '\r\n\r\n') out.push({ type: 'ping' });
        this.#buf = this.#buf.subarray(skip);
      }
      if (this.#buf.length === 0) return out;

      const headLimit = Math.min(this.#buf.length, this.#limits.maxHeaderBytes + 4);
      const end = findHeaderEnd(this.#buf, 0, headLimit);
      if (!end) {
        if (this.#buf.length > this.#limits.maxHeaderBytes) return this.#fail(out, `header section exceeds ${this.#limits.maxHeaderBytes} bytes`);
        // Wait for more; keep an owned copy so the socket's buffer can be reused.
        this.#buf = Buffer.from(this.#buf);
        return out;
      }
      const head = this.#buf.toString('latin1', 0, end.end);
      const cl = CONTENT_LENGTH.exec(head);
      if (!cl) return this.#fail(out, 'Content-Length is mandatory on stream transports (RFC 3261 §18.3)');
      if (!/^\d{1,9}$/.test(cl[1]!)) return this.#fail(out, 'Content-Length is not a number');
      const total = end.bodyStart + Number(cl[1]);
      if (total > this.#limits.maxMessageBytes) return this.#fail(out, `message of ${total} bytes exceeds ${this.#limits.maxMessageBytes}`);
      if (this.#buf.length < total) {
        this.#buf = Buffer.from(this.#buf);
        return out;
      }
      out.push({ type: 'message', data: Buffer.from(this.#buf.subarray(0, total)) });
      this.#buf = this.#buf.subarray(total);
    }
  }

  get buffered(): number {
    return this.#buf.length;
  }

  #fail(out: FramerOutput[], detail: string): FramerOutput[] {
    this.#failed = true;
    this.#buf = Buffer.alloc(0);
    out.push({ type: 'error', detail });
    return out;
  }
}
