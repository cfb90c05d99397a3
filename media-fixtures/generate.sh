#!/usr/bin/env bash
# Generates the media fixtures into media-fixtures/generated/ (gitignored).
# Idempotent and quick: each file is made only when missing; bumping VERSION
# below (when a recipe changes) wipes and rebuilds everything.
# Needs ffmpeg (with libopus), sox and espeak-ng. See media-fixtures/README.md.
set -euo pipefail

VERSION=1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/generated"
ROOT="$(cd "$HERE/.." && pwd)"

for tool in ffmpeg sox espeak-ng; do
  command -v "$tool" >/dev/null || { echo "generate.sh: $tool is required (apt-get install ffmpeg sox espeak-ng)" >&2; exit 1; }
done

if [[ -f "$OUT/.version" && "$(cat "$OUT/.version")" != "$VERSION" ]]; then
  rm -rf "$OUT"
fi
mkdir -p "$OUT"
echo "$VERSION" > "$OUT/.version"

ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }

# produce <output> <command...>: runs the command only if the output is missing,
# writing to a temp name first so an interrupted run never leaves half a file.
produce() {
  local out="$1"; shift
  [[ -s "$OUT/$out" ]] && return 0
  local tmp="$OUT/.tmp.$out"
  "$@" "$tmp"
  mv "$tmp" "$OUT/$out"
}

# Two tones far apart and not harmonically related (1230 / 523 = 2.35), so
# a spectral test can tell the speakers apart by >= 40 dB.
tone() { ff -f lavfi -i "sine=frequency=$1:sample_rate=48000:duration=30" -ac 1 -c:a pcm_s16le -f wav "$2"; }
produce agent-tone.wav tone 523
produce customer-tone.wav tone 1230

# Speech: two different espeak-ng voices, padded with silence to 20 s, 48 kHz mono.
speech() {
  local voice="$1" text="$2" out="$3"
  espeak-ng -v "$voice" -s 150 -w "$out.raw.wav" "$text"
  # 0.5 s of lead-in silence, then pad (or cut) to exactly 20 s.
  sox -V1 "$out.raw.wav" -r 48000 -c 1 -b 16 -t wav "$out" pad 0.5 20 trim 0 20
  rm -f "$out.raw.wav"
}
produce agent-speech.wav speech en-us \
  "Thank you for calling. My name is Alex. This call may be recorded for training, but only if you agree. How can I help you today? Let me check your account. One moment please."
produce customer-speech.wav speech en-gb+f3 \
  "Hello. I would like to ask about my last invoice. The amount looks higher than usual. Yes, I agree to the recording. My order arrived late as well."

# Opus as a WebRTC sender would produce it: 20 ms frames, VoIP mode.
opus() { ff -i "$OUT/$1" -c:a libopus -b:a "$2" -frame_duration 20 -application voip -f ogg "$3"; }
for who in agent customer; do
  produce "$who-tone.opus" opus "$who-tone.wav" 32k
  produce "$who-speech.opus" opus "$who-speech.wav" 24k
  # Telephone-side versions: 8 kHz WAV and raw G.711 µ-law.
  produce "$who-tone-8k.wav" ff -i "$OUT/$who-tone.wav" -ar 8000 -ac 1 -c:a pcm_s16le -f wav
  # 44.1 kHz for Chromium's fake audio capture device.
  produce "$who-tone-44k.wav" ff -i "$OUT/$who-tone.wav" -ar 44100 -ac 1 -c:a pcm_s16le -f wav
done
produce customer-tone.pcmu ff -i "$OUT/customer-tone.wav" -ar 8000 -ac 1 -f mulaw
produce agent-tone.pcmu ff -i "$OUT/agent-tone.wav" -ar 8000 -ac 1 -f mulaw

# RTP captures (network scenarios) from the Opus tone files.
if [[ ! -s "$OUT/rtp/customer-seqwrap.rtpcap" ]]; then
  (cd "$ROOT" && "$ROOT/node_modules/.bin/tsx" media-fixtures/makeCaptures.ts)
fi
