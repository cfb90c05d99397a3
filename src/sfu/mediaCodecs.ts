import type { types } from 'mediasoup';

/**
 * The audio codecs a call's Router offers. Opus for WebRTC legs (passed through into
 * Ogg untouched), PCMU and PCMA for SIP/PSTN legs (transcoded to Opus by the recorder).
 * Video is not recorded, but a softphone may still send it, so VP8 is offered.
 */
export const ROUTER_MEDIA_CODECS: types.RouterRtpCodecCapability[] = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, preferredPayloadType: 100 },
  { kind: 'audio', mimeType: 'audio/PCMU', clockRate: 8000, channels: 1, preferredPayloadType: 0 },
  { kind: 'audio', mimeType: 'audio/PCMA', clockRate: 8000, channels: 1, preferredPayloadType: 8 },
  { kind: 'video', mimeType: 'video/VP8', clockRate: 90000, preferredPayloadType: 101 },
];

export type AudioCodec = 'opus' | 'pcmu' | 'pcma';

export function audioCodecOf(mimeType: string): AudioCodec | undefined {
  switch (mimeType.toLowerCase()) {
    case 'audio/opus':
      return 'opus';
    case 'audio/pcmu':
      return 'pcmu';
    case 'audio/pcma':
      return 'pcma';
    default:
      return undefined;
  }
}

/** RTP parameters for a plain-RTP (SIP-style) audio leg sending one codec on one SSRC. */
export function plainAudioRtpParameters(codec: AudioCodec, ssrc: number, payloadType?: number): types.RtpParameters {
  const codecs: Record<AudioCodec, types.RtpCodecParameters> = {
    opus: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: payloadType ?? 100 },
    pcmu: { mimeType: 'audio/PCMU', clockRate: 8000, channels: 1, payloadType: payloadType ?? 0 },
    pcma: { mimeType: 'audio/PCMA', clockRate: 8000, channels: 1, payloadType: payloadType ?? 8 },
  };
  return { codecs: [codecs[codec]], encodings: [{ ssrc }] };
}
