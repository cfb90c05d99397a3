import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { z } from 'zod';
import type { RouteGroup } from '../http/HttpServer.ts';
import { sendJson } from '../http/HttpServer.ts';
import type { RoomDirectory } from './RoomDirectory.ts';
import type { CallTokenVerifier } from './callToken.ts';
import { TokenRefused } from './callToken.ts';
import { isOptinError } from '../errors/OptinError.ts';
import { IdSchema, idProblem } from '../ids/ids.ts';

/** The routes this group serves (docs/openapi.yaml documents each). */
export const CALL_CONTROL_ROUTES = ['POST /calls/{callId}/plain-legs', 'DELETE /calls/{callId}/plain-legs/{participantId}'] as const;

const port = z.int().min(1024).max(65535);

const PlainLegSchema = z
  .strictObject({
    participantId: IdSchema,
    codec: z.enum(['opus', 'pcmu', 'pcma']),
    ssrc: z.int().min(1).max(0xffffffff),
    /**
     * The RTP payload type the gateway sends (what its SDP negotiated): Opus on a dynamic type
     * (96-127, RFC 3551 §6; 111 is common), G.711 on its static one (PCMU 0, PCMA 8, RFC 3551
     * Table 4). Default: 100 for Opus, 0 / 8 for G.711. Packets of any other type are dropped by
     * the SFU, so a wrong value records nothing: hence the check here.
     */
    payloadType: z.int().min(0).max(127).optional(),
    /**
     * Where the gateway sends from (and receives RTCP): the leg accepts RTP from this address and
     * port only. Declared up front, never learnt from the first packet (no comedia), so a stranger
     * who reaches the port first cannot take the leg.
     */
    remote: z.strictObject({
      ip: z.string().refine((v) => isIP(v) !== 0, 'must be an IPv4 or IPv6 address'),
      rtpPort: port,
      /** Default rtpPort + 1 (RFC 3550 §11). */
      rtcpPort: port.optional(),
    }),
  })
  .refine((b) => b.payloadType === undefined || payloadTypeFits(b.codec, b.payloadType), {
    path: ['payloadType'],
    message: 'must be a dynamic payload type (96-127) for opus, 0 for pcmu, 8 for pcma',
  });

function payloadTypeFits(codec: 'opus' | 'pcmu' | 'pcma', pt: number): boolean {
  if (codec === 'opus') return pt >= 96 && pt <= 127;
  return pt === (codec === 'pcmu' ? 0 : 8);
}

async function readJson(req: IncomingMessage, max = 16 * 1024): Promise<unknown> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(c);
  }
  return JSON.parse(Buffer.concat(chunks).toString() || '{}');
}

/**
 * Call control for SIP/PSTN gateways: `POST /calls/{callId}/plain-legs` opens a PlainTransport
 * for one participant's RTP, connected to the address the gateway declared (RTCP on its own
 * port), and answers where to send it. The gateway proves it may with a single-use `sip-leg`
 * token for that call and participant, in `Authorization: Bearer` (never in the URL).
 */
export function callControlRoutes(rooms: RoomDirectory, tokens: CallTokenVerifier): RouteGroup {
  return async (req, res, url) => {
    const del = /^\/calls\/([^/]{1,128})\/plain-legs\/([^/]{1,128})$/.exec(url.pathname);
    if (del && req.method === 'DELETE') {
      await teardownLeg(rooms, tokens, req, res, decodeURIComponent(del[1]!), decodeURIComponent(del[2]!));
      return true;
    }
    const m = /^\/calls\/([^/]{1,128})\/plain-legs$/.exec(url.pathname);
    if (!m || req.method !== 'POST') return false;
    const callId = decodeURIComponent(m[1]!);
    const callProblem = idProblem(callId);
    if (callProblem !== undefined) {
      sendJson(res, 400, { error: 'bad-request', message: `callId ${callProblem}` });
      return true;
    }
    // Authentication first: an unauthenticated caller learns nothing about the body rules.
    const auth = bearerOf(req, res);
    if (auth === undefined) return true;
    let body: z.infer<typeof PlainLegSchema>;
    try {
      const parsed = PlainLegSchema.safeParse(await readJson(req));
      if (!parsed.success) {
        sendJson(res, 400, { error: 'bad-request', message: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') });
        return true;
      }
      body = parsed.data;
    } catch (err) {
      sendJson(res, (err as { status?: number }).status ?? 400, { error: 'bad-request', message: (err as Error).message });
      return true;
    }
    try {
      tokens.verify(auth, { callId, participantId: body.participantId });
    } catch (err) {
      refuseToken(res, err);
      return true;
    }
    try {
      const room = await rooms.get(callId);
      const remote = { ip: body.remote.ip, rtpPort: body.remote.rtpPort, rtcpPort: body.remote.rtcpPort ?? body.remote.rtpPort + 1 };
      const leg = await room.addPlainLeg(body.participantId, body.codec, body.ssrc, body.payloadType, remote);
      sendJson(res, 201, { ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, rtcpMux: false, comedia: false, remote, payloadType: leg.producer.rtpParameters.codecs[0]!.payloadType });
    } catch (err) {
      sendJson(res, isOptinError(err, 'LEG_EXISTS') ? 409 : 500, { error: isOptinError(err) ? err.code : 'failed', message: (err as Error).message });
    }
    return true;
  };
}

/** The token of `Authorization: Bearer <token>`, or undefined after answering 401. */
function bearerOf(req: IncomingMessage, res: ServerResponse): string | undefined {
  const auth = req.headers.authorization ?? '';
  if (/^Bearer [^\s]+$/.test(auth)) return auth.slice('Bearer '.length);
  sendJson(res, 401, { error: 'unauthorized', reason: 'malformed', message: 'send Authorization: Bearer <sip-leg token>' }, { 'www-authenticate': 'Bearer realm="optin-call-control"' });
  return undefined;
}

function refuseToken(res: ServerResponse, err: unknown): void {
  if (!(err instanceof TokenRefused)) throw err;
  sendJson(res, 401, { error: 'unauthorized', reason: err.reason, message: err.message }, { 'www-authenticate': 'Bearer realm="optin-call-control", error="invalid_token"' });
}

/**
 * `DELETE /calls/{callId}/plain-legs/{participantId}`: the gateway hung the leg up. Authorised
 * like the create route (a single-use `sip-leg` token for that call and participant). The leg's
 * transport closes; when it was the call's last leg (no softphone page and no other leg left)
 * the call ends as on `call.ended`: recording finalised, admission freed. 200 `{ callEnded }`
 * once done; 404 when the call or the leg is not here.
 */
async function teardownLeg(rooms: RoomDirectory, tokens: CallTokenVerifier, req: IncomingMessage, res: ServerResponse, callId: string, participantId: string): Promise<void> {
  for (const [name, value] of [['callId', callId], ['participantId', participantId]] as const) {
    const problem = idProblem(value);
    if (problem !== undefined) {
      sendJson(res, 400, { error: 'bad-request', message: `${name} ${problem}` });
      return;
    }
  }
  const auth = bearerOf(req, res);
  if (auth === undefined) return;
  try {
    tokens.verify(auth, { callId, participantId });
  } catch (err) {
    refuseToken(res, err);
    return;
  }
  const room = rooms.find(callId);
  if (room === undefined || !room.removePlainLeg(participantId)) {
    sendJson(res, 404, { error: 'not-found', message: `call ${callId} has no plain leg for that participant on this recorder` });
    return;
  }
  const callEnded = await rooms.endIfIdle(room);
  sendJson(res, 200, { callEnded });
}
