import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import type { RouteGroup } from '../http/HttpServer.ts';
import { sendJson } from '../http/HttpServer.ts';
import type { RoomDirectory } from './RoomDirectory.ts';
import { verifyJoinToken } from './joinToken.ts';
import { isOptinError } from '../errors/OptinError.ts';

const PlainLegSchema = z.strictObject({
  participantId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  codec: z.enum(['opus', 'pcmu', 'pcma']),
  ssrc: z.number().int().min(1).max(0xffffffff),
});

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
 * for one participant's RTP (comedia, RTCP on its own port) and answers where to send it. The
 * gateway proves it may by a join token for that call and participant (Authorization: Bearer).
 */
export function callControlRoutes(rooms: RoomDirectory, secret: string): RouteGroup {
  return async (req, res, url) => {
    const m = /^\/calls\/([A-Za-z0-9_-]{1,64})\/plain-legs$/.exec(url.pathname);
    if (!m || req.method !== 'POST') return false;
    const callId = m[1]!;
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
      const claims = verifyJoinToken(secret, (req.headers.authorization ?? '').replace(/^Bearer /, ''));
      if (claims.callId !== callId || claims.participantId !== body.participantId) throw new Error('token is for another call or participant');
    } catch (err) {
      sendJson(res, 401, { error: 'unauthorized', message: (err as Error).message });
      return true;
    }
    try {
      const room = await rooms.get(callId);
      const leg = await room.addPlainLeg(body.participantId, body.codec, body.ssrc);
      sendJson(res, 201, { ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, rtcpMux: false, comedia: true });
    } catch (err) {
      sendJson(res, isOptinError(err, 'LEG_EXISTS') ? 409 : 500, { error: isOptinError(err) ? err.code : 'failed', message: (err as Error).message });
    }
    return true;
  };
}
