import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const BARESIP = '/usr/bin/baresip';
export const BARESIP_MODULES = '/usr/lib/baresip/modules';

/** Fails (never skips) when Debian's baresip-core is missing: scripts/setup.sh installs it. */
export function assertBaresip(): void {
  if (!existsSync(BARESIP)) throw new Error(`${BARESIP} is missing: install Debian's baresip-core (scripts/setup.sh)`);
}

/**
 * Runs Debian's baresip for `seconds` in a config directory under `dir`: it dials `uri`, streams
 * a 440 Hz sine (module ausine), hangs up with a BYE and exits. Resolves with its output; rejects
 * when it exits with an error.
 */
export async function baresipCall(opts: { dir: string; codec: 'PCMU' | 'PCMA' | 'opus'; uri: string; seconds: number; transport: 'udp' | 'tcp'; srtp?: boolean }): Promise<string> {
  const { dir, codec, uri, seconds, transport, srtp = false } = opts;
  // baresip reads `config` and `accounts` from the directory given with -f.
  const conf = path.join(dir, `${codec}-${transport}${srtp ? '-srtp' : ''}-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(conf, { recursive: true });
  writeFileSync(
    path.join(conf, 'config'),
    [
      'poll_method epoll',
      'sip_listen 127.0.0.1:0',
      `audio_player aufile,${path.join(conf, 'played.wav')}`,
      'audio_source ausine,440',
      `audio_alert aufile,${path.join(conf, 'alert.wav')}`,
      'ausrc_srate 48000',
      'ausrc_channels 2',
      'rtcp_mux no',
      `module_path ${BARESIP_MODULES}`,
      'module g711.so',
      'module opus.so',
      'module ausine.so',
      'module aufile.so',
      'module srtp.so',
      'module_tmp account.so',
      'module_app menu.so',
      '',
    ].join('\n'),
  );
  writeFileSync(path.join(conf, 'accounts'), `<sip:baresip@127.0.0.1;transport=${transport}>;regint=0;audio_codecs=${codec === 'opus' ? 'opus/48000/2' : codec}${srtp ? ';mediaenc=srtp-mand' : ''}\n`);
  // `-n 127.0.0.1`: baresip announces (and sends from) loopback, the address our media plane pins to.
  const child = spawn(BARESIP, ['-f', conf, '-n', '127.0.0.1', '-e', `/dial ${uri}`, '-t', String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', () => undefined);
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (code !== 0) throw new Error(`baresip exited with ${code}: ${out.slice(-2000)}`);
  return out;
}
