/**
 * Whose voice is on each m-line (RFC 7866 §7.1.1, RFC 7865 §6.5): the line's `a=label` names a
 * metadata `stream`; the participant that `send`s that stream is its speaker. SRCs leave gaps, so
 * each step falls back to the next:
 *
 * 1. label → stream (exact match; a line without a label takes the metadata stream at its position);
 * 2. stream → participants sending it (`participantstreamassoc`, or the draft's `send` inside
 *    `participant`), ignoring participants that left;
 * 3. only `recv` listed: with two participants, the one NOT receiving the stream is speaking it;
 * 4. nothing: the active participant at the line's position, in document order;
 * 5. no metadata participant at all: the participant rules that need none (label, position).
 *
 * Several senders on one line (a mixed m-line carrying both directions) yield several speakers:
 * the media plane is told all of them, so the gate can require all their permissions.
 */
import { resolveParticipantId, type ParticipantIdRule } from './mapping.ts';
import type { RsMetadata, RsParticipant, RsStream } from './rsMetadata.ts';
import type { SipRequest } from '../sip/SipMessage.ts';

export interface LineAssignment {
  readonly participantId: string;
  readonly speakers: readonly string[];
  readonly streamId: string | undefined;
  /** How the speaker was found (bounded, for metrics and debug logs). */
  readonly via: 'send' | 'recv-inference' | 'position' | 'rules-only';
}

export type AssignmentResult = { ok: true; assignment: LineAssignment } | { ok: false; problem: string; left?: boolean };

export function assignLine(
  md: RsMetadata | undefined,
  label: string | undefined,
  position: number,
  rules: readonly ParticipantIdRule[],
  request: SipRequest,
  key?: string,
): AssignmentResult {
  const streams = md?.streams ?? [];
  const stream: RsStream | undefined = label !== undefined ? (streams.find((s) => s.label === label) ?? streams.find((s) => s.id === label)) : streams[position];
  const active = (md?.participants ?? []).filter((p) => !p.left);

  let speakers: RsParticipant[] = [];
  let via: LineAssignment['via'] = 'send';
  if (stream) {
    speakers = active.filter((p) => p.sends.includes(stream.id));
    // Everyone who sent this stream has left (a transfer away): nobody is left to record on it.
    if (speakers.length === 0 && (md?.participants ?? []).some((p) => p.left && p.sends.includes(stream.id))) {
      return { ok: false, problem: 'the participants sending this stream have left', left: true };
    }
  }
  if (speakers.length === 0 && stream && active.length === 2) {
    const receiver = active.filter((p) => p.recvs.includes(stream.id));
    if (receiver.length === 1) {
      speakers = active.filter((p) => p !== receiver[0]);
      via = 'recv-inference';
    }
  }
  if (speakers.length === 0 && active[position]) {
    speakers = [active[position]];
    via = 'position';
  }
  if (speakers.length === 0) {
    const r = resolveParticipantId(rules, { participant: undefined, stream, position, request }, key);
    if (!r.ok) return { ok: false, problem: r.problem };
    return { ok: true, assignment: { participantId: r.id, speakers: [r.id], streamId: stream?.id, via: 'rules-only' } };
  }
  const ids: string[] = [];
  for (const p of speakers) {
    const r = resolveParticipantId(rules, { participant: p, stream, position, request }, key);
    if (!r.ok) return { ok: false, problem: r.problem };
    if (!ids.includes(r.id)) ids.push(r.id);
  }
  return { ok: true, assignment: { participantId: ids[0]!, speakers: ids, streamId: stream?.id, via } };
}
