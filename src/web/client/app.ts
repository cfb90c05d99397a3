/**
 * The web app's one script (bundled by esbuild into /assets/app.<hash>.js; no inline script
 * exists anywhere: the CSP is script-src 'self'). Every page works without it; it adds:
 *
 * - the coaching player: the stereo render fetched once (one audited access), a waveform of
 *   each side (wavesurfer.js, split channels: agent left on top, customer right below), the
 *   consent instant and every gap and concealed stretch marked, each side mutable through a
 *   Web Audio channel split, and keyboard control;
 * - live status of a deletion (until its receipt arrives) and of an extract job (its progress,
 *   then its files), by polling the JSON API with the session cookie.
 */
import WaveSurfer from 'wavesurfer.js';
import RegionsPlugin from 'wavesurfer.js/dist/plugins/regions.esm.js';

interface Mark {
  kind: 'consent' | 'gap' | 'concealed';
  side: 'agent' | 'customer' | 'both';
  startMs: number;
  endMs: number;
  label: string;
}

interface Timeline {
  durationMs: number;
  marks: Mark[];
}

const SEEK_STEP_S = 5;

function announce(root: Element, text: string): void {
  const status = root.querySelector<HTMLElement>('[data-status]');
  if (status !== null) status.textContent = text;
}

function fmt(t: number): string {
  const m = Math.floor(t / 60);
  return `${m}:${(t - m * 60).toFixed(1).padStart(4, '0')}`;
}

function player(root: HTMLElement): void {
  const audio = root.querySelector<HTMLAudioElement>('[data-audio]');
  const container = root.querySelector<HTMLElement>('[data-waveform]');
  const url = root.dataset.audioUrl;
  if (audio === null || container === null || url === undefined) return;
  const timelineEl = document.getElementById('timeline');
  const timeline = (timelineEl === null ? null : (JSON.parse(timelineEl.textContent ?? 'null') as Timeline | null)) ?? { durationMs: 0, marks: [] };
  const marks = [...timeline.marks].sort((a, b) => a.startMs - b.startMs);
  const position = root.querySelector<HTMLElement>('[data-position]');
  // The native controls stay until the render is loaded (they also work without this script).
  audio.removeAttribute('src');
  audio.controls = false;
  audio.setAttribute('aria-hidden', 'true');

  const ws = WaveSurfer.create({
    container,
    media: audio,
    height: 64,
    normalize: true,
    cursorColor: '#1b1f24',
    cspNonce: root.dataset.styleNonce ?? '',
    splitChannels: [
      { waveColor: '#0b5cad', progressColor: '#06325f' },
      { waveColor: '#1d6b34', progressColor: '#0d3a1a' },
    ],
  });
  const regions = ws.registerPlugin(RegionsPlugin.create());

  // Web Audio: the element's stereo split into two gains, so either side can be muted.
  let gains: { agent: GainNode; customer: GainNode; ctx: AudioContext } | undefined;
  const graph = (): NonNullable<typeof gains> => {
    if (gains !== undefined) return gains;
    const ctx = new AudioContext();
    const source = ctx.createMediaElementSource(audio);
    const split = ctx.createChannelSplitter(2);
    const merge = ctx.createChannelMerger(2);
    const agent = ctx.createGain();
    const customer = ctx.createGain();
    source.connect(split);
    split.connect(agent, 0);
    split.connect(customer, 1);
    agent.connect(merge, 0, 0);
    customer.connect(merge, 0, 1);
    merge.connect(ctx.destination);
    gains = { agent, customer, ctx };
    return gains;
  };

  const button = (action: string): HTMLButtonElement | null => root.querySelector<HTMLButtonElement>(`[data-action="${action}"]`);
  const playButton = button('play');
  const setPlayingLabel = (): void => {
    if (playButton !== null) playButton.textContent = ws.isPlaying() ? 'Pause' : 'Play';
  };
  ws.on('play', setPlayingLabel);
  ws.on('pause', setPlayingLabel);
  ws.on('finish', setPlayingLabel);
  ws.on('timeupdate', (t) => {
    if (position !== null) position.textContent = fmt(t);
  });
  ws.on('ready', () => {
    root.dataset.ready = 'true';
    root.dataset.channels = String(ws.getDecodedData()?.numberOfChannels ?? 0);
    root.dataset.marks = String(marks.length);
    for (const m of marks) {
      const color = m.kind === 'consent' ? 'rgba(194, 94, 0, 0.9)' : m.kind === 'gap' ? 'rgba(166, 27, 27, 0.25)' : 'rgba(122, 75, 0, 0.25)';
      regions.addRegion({
        start: m.startMs / 1000,
        end: m.kind === 'consent' ? m.startMs / 1000 : Math.max(m.endMs, m.startMs + 1) / 1000,
        color,
        drag: false,
        resize: false,
        ...(m.side === 'both' ? {} : { channelIdx: m.side === 'agent' ? 0 : 1 }),
        ...(m.kind === 'consent' ? { content: 'consent' } : {}),
      });
    }
    announce(root, 'The recording is loaded. Press Space to play.');
  });

  const toggle = async (): Promise<void> => {
    const g = graph();
    if (g.ctx.state === 'suspended') await g.ctx.resume();
    await ws.playPause();
  };
  const seekBy = (d: number): void => {
    ws.setTime(Math.max(0, Math.min(ws.getDuration(), ws.getCurrentTime() + d)));
    announce(root, `At ${fmt(ws.getCurrentTime())}`);
  };
  const mute = (side: 'agent' | 'customer'): void => {
    const g = graph();
    const gain = g[side];
    const muted = gain.gain.value > 0;
    gain.gain.value = muted ? 0 : 1;
    const b = button(`mute-${side}`);
    b?.setAttribute('aria-pressed', String(muted));
    root.dataset[`${side}Muted`] = String(muted);
    announce(root, `${side === 'agent' ? 'Agent' : 'Customer'} ${muted ? 'muted' : 'audible'}`);
  };
  const jump = (dir: 1 | -1): void => {
    const now = ws.getCurrentTime() * 1000;
    const next = dir > 0 ? marks.find((m) => m.startMs > now + 50) : [...marks].reverse().find((m) => m.startMs < now - 50);
    if (next === undefined) {
      announce(root, dir > 0 ? 'No later mark' : 'No earlier mark');
      return;
    }
    ws.setTime(next.startMs / 1000);
    announce(root, `${fmt(next.startMs / 1000)}: ${next.label}`);
  };

  const actions: Record<string, () => void> = {
    play: () => void toggle(),
    back: () => seekBy(-SEEK_STEP_S),
    forward: () => seekBy(SEEK_STEP_S),
    'mute-agent': () => mute('agent'),
    'mute-customer': () => mute('customer'),
    'prev-mark': () => jump(-1),
    'next-mark': () => jump(1),
  };
  root.addEventListener('click', (ev) => {
    const target = (ev.target as HTMLElement).closest<HTMLElement>('[data-action], [data-seek]');
    if (target === null) return;
    if (target.dataset.seek !== undefined) {
      ws.setTime(Number(target.dataset.seek));
      announce(root, `At ${fmt(Number(target.dataset.seek))}`);
      return;
    }
    actions[target.dataset.action ?? '']?.();
  });
  // Keys act while focus is inside the player (not on a form control elsewhere on the page).
  root.addEventListener('keydown', (ev) => {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const key: Record<string, string> = { ' ': 'play', k: 'play', ArrowLeft: 'back', ArrowRight: 'forward', a: 'mute-agent', c: 'mute-customer', '[': 'prev-mark', ']': 'next-mark' };
    const action = key[ev.key];
    if (action === undefined) return;
    // Space and Enter on a focused button already click it.
    if ((ev.key === ' ' || ev.key === 'Enter') && (ev.target as HTMLElement).tagName === 'BUTTON') return;
    ev.preventDefault();
    actions[action]?.();
  });
  root.tabIndex = root.tabIndex < 0 ? -1 : root.tabIndex;

  // One fetch of the render: one audited access (Range requests of an <audio> would audit each piece).
  void (async () => {
    announce(root, 'Loading the recording');
    const res = await fetch(url, { credentials: 'same-origin' });
    if (!res.ok) {
      root.dataset.error = String(res.status);
      const err = document.createElement('p');
      err.className = 'error';
      err.setAttribute('role', 'alert');
      err.textContent = res.status === 503 ? 'The audio workers are busy; try again in a few seconds.' : res.status === 404 ? 'This recording is no longer available (deleted or expired).' : `The recording could not be loaded (${res.status}).`;
      container.replaceWith(err);
      return;
    }
    await ws.loadBlob(await res.blob());
  })();
}

async function pollJson(url: string): Promise<Record<string, unknown> | undefined> {
  const res = await fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  return res.ok ? ((await res.json()) as Record<string, unknown>) : undefined;
}

function deletionStatus(root: HTMLElement): void {
  const id = root.dataset.deletion;
  if (id === undefined || root.dataset.state === 'done') return;
  const timer = setInterval(() => {
    void pollJson(`/api/deletions/${id}`).then((s) => {
      if (s === undefined || s.state !== 'done') return;
      clearInterval(timer);
      // The server renders the receipt: reload once, keeping focus management simple for screen readers.
      window.location.reload();
    });
  }, 1000);
}

function extractStatus(root: HTMLElement): void {
  const id = root.dataset.extract;
  if (id === undefined || !['queued', 'running'].includes(root.dataset.state ?? '')) return;
  const progress = root.querySelector<HTMLProgressElement>('[data-progress]');
  const text = root.querySelector<HTMLElement>('[data-progress-text]');
  const timer = setInterval(() => {
    void pollJson(`/api/extracts/${id}`).then((j) => {
      if (j === undefined) return;
      const p = j.progress as { done: number; total: number };
      if (progress !== null && p.total > 0) progress.value = Math.round((100 * p.done) / p.total);
      if (text !== null) text.textContent = `${p.done} of ${p.total} segments`;
      if (j.state !== 'queued' && j.state !== 'running') {
        clearInterval(timer);
        window.location.reload();
      }
    });
  }, 500);
}

function start(): void {
  document.querySelectorAll<HTMLElement>('[data-player]').forEach(player);
  document.querySelectorAll<HTMLElement>('[data-deletion]').forEach(deletionStatus);
  document.querySelectorAll<HTMLElement>('[data-extract]').forEach(extractStatus);
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
