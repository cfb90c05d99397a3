import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

/** A JSON request over HTTP(S), with an optional private CA: what the CLI needs, no more. */
export async function requestJson(
  url: string,
  options: { method: string; headers?: Record<string, string>; body?: unknown; ca?: Buffer; timeoutMs?: number },
): Promise<{ status: number; body: unknown }> {
  const target = new URL(url);
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const req = send(
      target,
      {
        method: options.method,
        headers: { accept: 'application/json', ...(payload === undefined ? {} : { 'content-type': 'application/json' }), ...(options.headers ?? {}) },
        ...(options.ca === undefined ? {} : { ca: options.ca }),
        timeout: options.timeoutMs ?? 15_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = text === '' ? {} : JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${target.origin} within the timeout`)));
    req.on('error', reject);
    req.end(payload);
  });
}
