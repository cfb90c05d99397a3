/**
 * Consent evidence in words (R3), for people: an agent or a team lead reading "why may this call
 * be played?" should not have to decode `{method: 'dtmf', at: 1767..., infoVersion: 'v3'}`.
 * Pure; the times are written in UTC with the date, so the sentence means the same to everyone.
 * The evidence `ref` (a pointer into the IVR's own log) is the DPO's and never part of the words.
 */

const METHOD_WORDS: Readonly<Record<string, string>> = Object.freeze({
  dtmf: 'pressed a key on the phone keypad',
  voice: 'said yes when asked',
  web: 'agreed in a web form',
  app: 'agreed in the app',
  sms: 'agreed by text message',
  written: 'agreed in writing',
});

const STATUS_WORDS: Readonly<Record<string, string>> = Object.freeze({
  granted: 'agreed to the recording',
  declined: 'declined the recording',
  withdrawn: 'withdrew consent',
});

export interface EvidenceLike {
  method?: unknown;
  at?: unknown;
  infoVersion?: unknown;
  /** Present in stored evidence; never put into words. */
  ref?: unknown;
}

/** "14:03:12 UTC on 3 May 2026". */
export function utcWords(ms: number): string {
  const d = new Date(ms);
  const months = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
  const hh = String(d.getUTCHours()).padStart(2, '0');
  const mm = String(d.getUTCMinutes()).padStart(2, '0');
  const ss = String(d.getUTCSeconds()).padStart(2, '0');
  return `${hh}:${mm}:${ss} UTC on ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()}`;
}

function atMs(at: unknown): number | undefined {
  if (typeof at === 'number' && Number.isFinite(at)) return at;
  if (typeof at === 'string') {
    const t = Date.parse(at);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

/**
 * One sentence per act: "The customer pressed a key on the phone keypad at 14:03:12 UTC on
 * 3 May 2026, after hearing information version 2026-01.v1." `status` is the act (granted by
 * default: a manifest's evidence is the grant the recording rests on).
 */
export function consentInWords(e: EvidenceLike, status: string = 'granted'): string {
  const method = typeof e.method === 'string' ? METHOD_WORDS[e.method] : undefined;
  const at = atMs(e.at);
  const version = typeof e.infoVersion === 'string' ? e.infoVersion : undefined;
  const act = status === 'granted' ? (method ?? 'agreed to the recording') : `${STATUS_WORDS[status] ?? status}${method ? ` (${method.replace(/^agreed /, '')})` : ''}`;
  const when = at === undefined ? ' (time not recorded)' : ` at ${utcWords(at)}`;
  const info = version === undefined ? ', with no record of the information given' : `, after hearing information version ${version}`;
  return `The customer ${act}${when}${info}.`;
}

/** The evidence list of a recording in words; an empty list says so plainly. */
export function consentListInWords(list: readonly (EvidenceLike & { status?: unknown })[]): string[] {
  if (list.length === 0) return ['No consent evidence is recorded for this call.'];
  return list.map((e) => consentInWords(e, typeof e.status === 'string' ? e.status : 'granted'));
}

/** "in 12 days", "in 5 hours", "today", "expired". */
export function expiresInWords(expiresAtMs: number, nowMs: number): string {
  const left = expiresAtMs - nowMs;
  if (left <= 0) return 'expired';
  const days = Math.floor(left / 86_400_000);
  if (days >= 2) return `in ${days} days`;
  if (days === 1) return 'in 1 day';
  const hours = Math.floor(left / 3_600_000);
  if (hours >= 1) return `in ${hours} hour${hours === 1 ? '' : 's'}`;
  return 'within the hour';
}

/** "4 min 05 s", "58 s". */
export function durationWords(ms: number): string {
  const total = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h} h ${String(m).padStart(2, '0')} min`;
  if (m > 0) return `${m} min ${String(s).padStart(2, '0')} s`;
  return `${s} s`;
}
