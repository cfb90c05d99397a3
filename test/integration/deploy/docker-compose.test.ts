/**
 * docker/ is for deployments elsewhere (no container engine runs here): what can be validated
 * without one is. Debian's docker-compose parses, interpolates and checks the compose file with
 * the secrets supplied as files (made by docker/make-secrets.sh, as an operator does); the
 * result is read back (PyYAML, which docker-compose itself runs on) and held to the deployment's
 * promises: replicated store and database, two control planes and two recorders, TLS, secrets
 * only as files, operator surfaces on internal networks, the announced address set, and every
 * OPTIN_ variable one the code reads. The compiled image's behaviour is tested in build.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requireAuditKey } from '../../../src/audit/auditKey.ts';
import { loadConfig } from '../../../src/config/config.ts';
import { auditStoreSettings, loadControlPlaneConfig, storeConfigured } from '../../../src/controlplane/config.ts';

interface Service {
  image?: string;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string | null>;
  ports?: (Port | string)[];
  networks?: Record<string, { ipv4_address?: string; aliases?: string[] } | null>;
  secrets?: { source: string; target?: string }[];
  volumes?: unknown[];
}
interface Port {
  target: number;
  published?: string | number;
  host_ip?: string;
  protocol?: string;
}
interface Compose {
  services: Record<string, Service>;
  networks: Record<string, { internal?: boolean }>;
  secrets: Record<string, { file: string }>;
}

let dir: string;
let secretsDir: string;
let raw: string;
let compose: Compose;
const ANNOUNCED = '198.51.100.7';

function composeConfig(envFile: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('docker-compose', ['--env-file', envFile, '-f', 'docker/compose.yaml', 'config'], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'optin-compose-'));
  secretsDir = path.join(dir, 'secrets');
  execFileSync('bash', ['docker/make-secrets.sh', secretsDir], { stdio: 'pipe' });
  const envFile = path.join(dir, 'env');
  writeFileSync(envFile, `OPTIN_ANNOUNCED_ADDRESS=${ANNOUNCED}\nOPTIN_SECRETS_DIR=${secretsDir}\n`);
  const r = composeConfig(envFile);
  if (r.status !== 0) throw new Error(`docker-compose config failed: ${r.stderr}`);
  raw = r.stdout;
  compose = JSON.parse(execFileSync('python3', ['-c', 'import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: raw, encoding: 'utf8' })) as Compose;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** docker-compose 1.x prints a port as a mapping or as `[host_ip:]published:target[/protocol]`. */
function ports(svc: string): Port[] {
  return (compose.services[svc]!.ports ?? []).map((p) => {
    if (typeof p !== 'string') return p;
    const [spec, protocol] = p.split('/');
    const parts = spec!.split(':');
    const target = Number(parts.pop());
    const published = parts.pop();
    return { target, ...(published === undefined ? {} : { published }), ...(parts.length > 0 ? { host_ip: parts[0]! } : {}), ...(protocol ? { protocol } : {}) };
  });
}

const env = (svc: string): Record<string, string> => Object.fromEntries(Object.entries(compose.services[svc]!.environment ?? {}).map(([k, v]) => [k, v ?? '']));

describe('docker/compose.yaml', () => {
  it('is valid, and refuses to start without the announced media address', () => {
    const services = Object.keys(compose.services).sort();
    expect(services).toEqual(
      [
        'ceph-bootstrap', 'ceph-mon-a', 'ceph-mon-b', 'ceph-mon-c', 'ceph-mgr', 'ceph-osd-0', 'ceph-osd-1', 'ceph-osd-2', 'ceph-setup',
        'rgw-a', 'rgw-b', 'rgw-c', 's3', 'pg-primary', 'pg-standby', 'control-1', 'control-2', 'api-lb',
        'recorder-1', 'recorder-2', 'prometheus', 'grafana',
      ].sort(),
    );
    const noAddress = path.join(dir, 'env-no-address');
    writeFileSync(noAddress, `OPTIN_SECRETS_DIR=${secretsDir}\n`);
    const r = composeConfig(noAddress);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('set OPTIN_ANNOUNCED_ADDRESS');
  });

  it('Ceph: three monitors at the addresses the monmap names, three OSDs, pools x3 (min 2), three gateways behind one S3 endpoint', () => {
    const mons = env('ceph-mon-a').CEPH_MONS!.split(' ').map((m) => m.split('='));
    expect(mons.map(([id]) => id)).toEqual(['a', 'b', 'c']);
    for (const [id, addr] of mons) expect(`${compose.services[`ceph-mon-${id}`]!.networks!.ceph!.ipv4_address}:3300`).toBe(addr);
    for (const id of ['0', '1', '2']) expect(compose.services[`ceph-osd-${id}`]!.command).toEqual(['osd', id]);
    expect(env('ceph-setup')).toMatchObject({ CEPH_POOL_SIZE: '3', CEPH_POOL_MIN_SIZE: '2', CEPH_EXPECTED_OSDS: '3', CEPH_OBJECTSTORE: 'bluestore' });
    expect(compose.services['ceph-mon-a']!.image).toMatch(/^quay\.io\/ceph\/ceph:v\d+/);
    const s3cfg = readFileSync('docker/haproxy/s3.cfg', 'utf8');
    const gateways = [...s3cfg.matchAll(/^\s+server (\S+) (\S+):7480$/gm)].map((m) => m[2]!);
    expect(gateways).toEqual(['rgw-a', 'rgw-b', 'rgw-c']);
    for (const g of gateways) expect(compose.services[g]!.command).toEqual(['rgw', g.slice(4)]);
    execFileSync('bash', ['-n', 'docker/ceph/ceph-node.sh']);
  });

  it('PostgreSQL: a primary and a streaming-replication standby, synchronous', () => {
    expect(compose.services['pg-primary']!.image).toMatch(/^postgres:15/);
    expect(compose.services['pg-standby']!.entrypoint).toEqual(['bash', '/opt/optin/standby.sh']);
    const init = readFileSync('docker/postgres/primary-init.sh', 'utf8');
    expect(init).toContain("synchronous_standby_names = 'standby1'");
    expect(readFileSync('docker/postgres/standby.sh', 'utf8')).toMatch(/pg_basebackup -h pg-primary .* -R .*application_name=standby1/);
    for (const f of ['docker/postgres/primary-init.sh', 'docker/postgres/standby.sh']) execFileSync('bash', ['-n', f]);
  });

  it('two control planes with TLS on the API and the policy stream; recorders dial it over wss with the CA', () => {
    for (const svc of ['control-1', 'control-2']) {
      expect(compose.services[svc]!.command).toEqual(['node', '--enable-source-maps', 'dist/workers/control.js']);
      expect(env(svc)).toMatchObject({ OPTIN_CONTROL_TLS_CERT: '/run/secrets/tls_cert', OPTIN_CONTROL_TLS_KEY: '/run/secrets/tls_key', OPTIN_CONTROL_HOST: '0.0.0.0' });
      expect(compose.services[svc]!.networks!.control!.aliases).toContain('control');
    }
    for (const svc of ['recorder-1', 'recorder-2']) {
      expect(env(svc).OPTIN_CONTROL_URL).toBe('wss://control:8780/v1/stream');
      expect(env(svc).OPTIN_CONTROL_CA_FILE).toBe('/run/secrets/ca_cert');
    }
    // The certificate names every host the clients dial.
    const san = execFileSync('openssl', ['x509', '-in', path.join(secretsDir, 'tls_cert'), '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' });
    for (const host of ['control', 'control-1', 'control-2', 'api-lb']) expect(san).toContain(`DNS:${host},`);
    execFileSync('openssl', ['verify', '-CAfile', path.join(secretsDir, 'ca_cert'), path.join(secretsDir, 'tls_cert')]);
    const api = readFileSync('docker/haproxy/api.cfg', 'utf8');
    expect(api).toContain('bind :8443 ssl crt /run/secrets/tls_bundle');
    expect(api).toMatch(/default-server check ssl verify required ca-file \/run\/secrets\/ca_cert/);
    expect(api).toContain('http-request deny deny_status 404 unless { path_beg /v1/ }');
  });

  it('secrets are files only: no secret value in the compose file or its output, every secret-like variable names a /run/secrets file', () => {
    const files = readdirSync(secretsDir).filter((f) => f !== 'integration-tokens.txt' && f !== 'ca_key');
    for (const [name, s] of Object.entries(compose.secrets)) {
      expect(s.file, name).toBe(path.join(secretsDir, name));
      expect(existsSync(s.file), name).toBe(true);
    }
    const text = readFileSync('docker/compose.yaml', 'utf8') + readFileSync('docker/.env.example', 'utf8') + raw;
    for (const f of files) {
      for (const line of readFileSync(path.join(secretsDir, f), 'utf8').split('\n')) {
        if (line.length >= 16 && !line.startsWith('-----')) expect(text.includes(line), `${f} appears in the compose output`).toBe(false);
      }
    }
    const secretLike = /SECRET|PASSWORD|KEYRING|_KEY(_FILE)?$|TOKEN|DATABASE_URL/;
    for (const [svc, s] of Object.entries(compose.services)) {
      for (const [name, value] of Object.entries(s.environment ?? {})) {
        if (secretLike.test(name)) expect(value, `${svc} ${name}`).toMatch(/^\/run\/secrets\/[a-z0-9_]+$/);
      }
      for (const ref of s.secrets ?? []) expect(compose.secrets[ref.source], `${svc} secret ${ref.source}`).toBeDefined();
    }
  });

  it('operator surfaces are internal: recorder HTTP on the ops network, nothing published but the API, media and Grafana on loopback', () => {
    for (const name of ['control', 'db', 'store', 'ceph', 'ops']) expect(compose.networks[name]!.internal, name).toBe(true);
    expect(compose.networks.edge!.internal).toBeUndefined();
    const published = Object.entries(compose.services).filter(([, s]) => (s.ports ?? []).length > 0).map(([n]) => n).sort();
    expect(published).toEqual(['api-lb', 'grafana', 'recorder-1', 'recorder-2']);
    expect(ports('grafana').map((p) => p.host_ip)).toEqual(['127.0.0.1']);
    expect(ports('api-lb').map((p) => p.target)).toEqual([8443]);
    const scrape = readFileSync('docker/prometheus/prometheus.yml', 'utf8');
    for (const svc of ['recorder-1', 'recorder-2']) {
      const s = compose.services[svc]!;
      // Published: WebRTC/RTP media, the SIPREC server's SIP port (UDP and TCP) and its media
      // range, each the same inside and out (what Via, Contact and SDP announce); nothing else.
      const e = env(svc);
      const range = (min: string | undefined, max: string | undefined): string[] =>
        Array.from({ length: Number(max) - Number(min) + 1 }, (_, i) => `${Number(min) + i}/udp`);
      const expected = [
        ...range(e.OPTIN_RTC_MIN_PORT, e.OPTIN_RTC_MAX_PORT),
        ...range(e.OPTIN_SIPREC_MEDIA_PORT_MIN, e.OPTIN_SIPREC_MEDIA_PORT_MAX),
        `${e.OPTIN_SIPREC_UDP_PORT}/udp`,
        `${e.OPTIN_SIPREC_TCP_PORT}/tcp`,
      ].sort();
      expect(ports(svc).filter((p) => String(p.published) !== String(p.target)), `${svc}: host port = container port`).toEqual([]);
      expect(ports(svc).map((p) => `${p.target}/${p.protocol}`).sort(), `${svc}: only media and SIP are published`).toEqual(expected);
      expect(e.OPTIN_SIPREC_ENABLED).toBe('true');
      expect(e.OPTIN_SIPREC_ADVERTISED_HOST).toBe(ANNOUNCED);
      expect(env(svc).OPTIN_HTTP_HOST).toBe(s.networks!.ops!.ipv4_address);
      expect(scrape).toContain(`'${env(svc).OPTIN_HTTP_HOST}:7800'`);
      expect(env(svc).OPTIN_ANNOUNCED_ADDRESS).toBe(ANNOUNCED);
    }
    expect(Object.keys(compose.services.prometheus!.networks!).sort()).toEqual(['control', 'ops']);
  });

  it('every OPTIN_ variable the deployment sets is one the code reads (a *_FILE one: its base name)', () => {
    const recorderKnown = readFileSync('src/config/config.ts', 'utf8');
    const controlKnown = readFileSync('src/controlplane/config.ts', 'utf8');
    const dockerfile = readFileSync('docker/Dockerfile', 'utf8');
    const check = (name: string, known: string, where: string): void => {
      const base = known.includes(`${name}:`) ? name : name.replace(/_FILE$/, '');
      expect(known, `${where}: ${name} is not read by its configuration loader`).toContain(`${base}:`);
    };
    for (const svc of ['control-1', 'control-2']) for (const name of Object.keys(env(svc)).filter((n) => n.startsWith('OPTIN_'))) check(name, controlKnown, svc);
    for (const svc of ['recorder-1', 'recorder-2']) for (const name of Object.keys(env(svc)).filter((n) => n.startsWith('OPTIN_'))) check(name, recorderKnown, svc);
    // The image's defaults serve both workers (OPTIN_CACHE_DIR is the worker build script's).
    for (const m of dockerfile.matchAll(/\b(OPTIN_[A-Z0-9_]+)=/g)) if (m[1] !== 'OPTIN_CACHE_DIR') check(m[1]!, recorderKnown + controlKnown, 'Dockerfile');
  });

  it('every writer starts on this configuration, with the audit HMAC key (owner-only file) and its own audit principal', () => {
    // A service's environment as its process sees it: /run/secrets/<name> is the made file.
    const resolved = (svc: string): NodeJS.ProcessEnv =>
      Object.fromEntries(Object.entries(env(svc)).map(([k, v]) => [k, v.replace(/^\/run\/secrets\//, `${secretsDir}/`)]));
    for (const svc of ['recorder-1', 'recorder-2']) {
      const config = loadConfig(resolved(svc));
      expect(requireAuditKey(config.audit), svc).toHaveLength(32);
      expect(config.audit.accessKey, svc).toBeDefined();
      expect(config.audit.accessKey, `${svc}: the audit principal is not the store user`).not.toBe(config.s3.accessKey);
    }
    for (const svc of ['control-1', 'control-2']) {
      const config = loadControlPlaneConfig(resolved(svc));
      expect(storeConfigured(config), svc).toBe(true);
      const audit = auditStoreSettings(config);
      expect(audit.hmacKey, svc).toHaveLength(32);
      expect(audit.accessKey, `${svc}: the audit principal is not the store user`).not.toBe(config.s3.accessKey);
    }
    // The key file is refused when others can read it (src/audit/auditKey.ts): made 0600.
    expect(statSync(path.join(secretsDir, 'audit_hmac_key')).mode & 0o777).toBe(0o600);
    // Ceph makes the audit principal a user of its own, which owns the object-locked audit bucket.
    expect(env('ceph-setup')).toMatchObject({ S3_AUDIT_ACCESS_KEY_FILE: '/run/secrets/s3_audit_access_key', S3_AUDIT_SECRET_KEY_FILE: '/run/secrets/s3_audit_secret_key' });
    expect(readFileSync('docker/ceph/ceph-node.sh', 'utf8')).toContain('user create --uid optin-audit');
    // .env.example is configuration only: no secret, placeholder or real, is ever set there.
    const example = readFileSync('docker/.env.example', 'utf8').split('\n').filter((l) => /^[A-Z0-9_]+=/.test(l)).map((l) => l.slice(0, l.indexOf('=')));
    expect(example.filter((n) => !n.endsWith('_DIR') && /SECRET|PASSWORD|KEYRING|_KEY$|TOKEN|DATABASE_URL/.test(n))).toEqual([]);
  });
});

describe('docker/Dockerfile', () => {
  const dockerfile = readFileSync('docker/Dockerfile', 'utf8');
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));

  it('builds with npm run build, keeps production dependencies only, runs compiled JavaScript as a non-root user', () => {
    expect(dockerfile).toMatch(/^FROM node:24-bookworm AS build$/m);
    expect(runtime).toMatch(/^FROM node:24-bookworm-slim$/m);
    expect(dockerfile).toMatch(/RUN npm run build \\\n && npm prune --omit=dev/);
    expect(runtime).toMatch(/^USER node$/m);
    // The main thread's young generation as small as the media threads' (README, performance).
    expect(runtime).toContain('CMD ["node", "--enable-source-maps", "--max-semi-space-size=2", "dist/workers/recorder.js"]');
    expect(runtime).not.toMatch(/\btsx\b|COPY src|\.ts"/);
    expect(runtime).toContain('COPY --from=build /app/dist dist');
    expect(existsSync('workers/recorder.ts') && existsSync('workers/control.ts')).toBe(true);
  });

  it('the worker binary comes from build.sh, which checks a prebuilt download against prebuilt.sha256', () => {
    expect(dockerfile).toContain('COPY scripts/mediasoup-worker scripts/mediasoup-worker');
    expect(dockerfile).toContain('bash scripts/mediasoup-worker/build.sh');
    expect(readFileSync('scripts/mediasoup-worker/build.sh', 'utf8')).toContain('prebuilt.sha256');
    expect(readFileSync('scripts/mediasoup-worker/prebuilt.sha256', 'utf8')).toMatch(/^[0-9a-f]{64} {2}mediasoup-worker-\d+\.\d+\.\d+-linux-x64-kernel6$/m);
  });

  it('.dockerignore sends only what the Dockerfile copies (no secrets, no local state)', () => {
    const ignore = readFileSync('.dockerignore', 'utf8');
    expect(ignore).toMatch(/^\*\*$/m);
    for (const copied of [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(' '))) {
      expect(ignore, copied).toContain(`!${copied.replace(/\/$/, '')}`);
    }
    expect(ignore).not.toContain('docker/secrets');
  });
});
