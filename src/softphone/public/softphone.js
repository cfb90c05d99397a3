// optin softphone: joins one call as one participant, sends the microphone, plays the others,
// and shows whether the call is being recorded right now (R7), from the worker's own report.
/* global mediasoupClient */
(() => {
  // The join token comes in the URL fragment (#token=...), which browsers never send to a server
  // nor put in Referer; it is wiped from the address bar at once and travels only in the first
  // WebSocket message. It is single use: a reload needs a fresh link from the voice platform.
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  history.replaceState(null, '', location.pathname + location.search);
  const stateEl = document.getElementById('recording-state');
  const logEl = document.getElementById('log');
  const log = (m) => { logEl.textContent += `${new Date().toISOString().slice(11, 23)} ${m}\n`; };
  // What the page showed and when: the end-to-end test checks it against the recording.
  window.__recordingHistory = [];
  window.__joined = false;

  const REASONS = {
    'no-consent': 'the customer has not agreed', 'consent-declined': 'the customer declined',
    'consent-withdrawn': 'the customer withdrew consent', 'outside-window': 'outside the training period',
    'cap-reached': 'monthly limit reached', paused: 'paused', 'control-stale': 'policy link down',
    'call-ended': 'call ended', 'unknown-call': 'call not known', 'storage-unavailable': 'storage unavailable',
    overloaded: 'recorder at capacity',
  };
  function showState(s) {
    const recording = Boolean(s && s.recording);
    stateEl.dataset.recording = String(recording);
    stateEl.textContent = recording ? 'Recorded for agent training'
      : `Not recorded${s && s.reasons && s.reasons.length ? ` (${s.reasons.map((r) => REASONS[r] || r).join(', ')})` : ''}`;
    window.__recordingHistory.push({ recording, at: Date.now(), reasons: (s && s.reasons) || [] });
  }

  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/signal`);
  let nextId = 1;
  const pending = new Map();
  const request = (method, data = {}) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ id, method, ...data }));
  });
  let device, recvTransport;
  const consumeQueue = [];

  async function consume(producerId) {
    if (!recvTransport) { consumeQueue.push(producerId); return; }
    const c = await request('consume', { transportId: recvTransport.id, producerId, rtpCapabilities: device.rtpCapabilities });
    const consumer = await recvTransport.consume(c);
    const audio = document.getElementById('remote');
    audio.srcObject = new MediaStream([consumer.track]);
    await audio.play().catch(() => undefined);
    // Level of what this page hears (audioLevel stats stay 0 while muted; an AnalyserNode does not).
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    ctx.createMediaStreamSource(audio.srcObject).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    window.__remoteLevel = () => { analyser.getFloatTimeDomainData(buf); let s = 0; for (const v of buf) s += v * v; return Math.sqrt(s / buf.length); };
    log(`hearing ${producerId.slice(0, 8)}`);
  }

  ws.onmessage = async (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.id && pending.has(msg.id)) {
      const p = pending.get(msg.id); pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.data); else p.reject(new Error(`${msg.error}: ${msg.message}`));
      return;
    }
    if (msg.event === 'recordingState') showState(msg.data);
    if (msg.event === 'newProducer') consume(msg.data.producerId).catch((e) => log(`consume failed: ${e.message}`));
  };
  ws.onclose = () => { showState({ recording: false, reasons: ['control-stale'] }); log('disconnected'); };

  ws.onopen = async () => {
    try {
      const joined = await request('join', { token });
      document.getElementById('who').textContent = `Joined call as participant ${params.get('name') || ''}`;
      showState(joined.recordingState || { recording: false, reasons: ['no-consent'] });
      device = new mediasoupClient.Device();
      await device.load({ routerRtpCapabilities: joined.routerRtpCapabilities });

      const sendInfo = await request('createTransport', { direction: 'send' });
      const send = device.createSendTransport(sendInfo);
      send.on('connect', ({ dtlsParameters }, ok, fail) => request('connectTransport', { transportId: send.id, dtlsParameters }).then(ok, fail));
      send.on('produce', ({ kind, rtpParameters }, ok, fail) => request('produce', { transportId: send.id, kind, rtpParameters }).then(ok, fail));

      const recvInfo = await request('createTransport', { direction: 'recv' });
      recvTransport = device.createRecvTransport(recvInfo);
      recvTransport.on('connect', ({ dtlsParameters }, ok, fail) => request('connectTransport', { transportId: recvTransport.id, dtlsParameters }).then(ok, fail));

      // Tones and speech lose energy to echo cancellation, noise suppression and AGC: all off.
      const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
      await send.produce({ track: stream.getAudioTracks()[0] });
      log('microphone sending');
      for (const p of joined.producers) await consume(p.producerId);
      while (consumeQueue.length) await consume(consumeQueue.shift());
      window.__joined = true;
    } catch (e) {
      log(`failed: ${e.message}`);
      window.__error = e.message;
    }
  };

  document.getElementById('dtmf1').onclick = () => request('dtmf', { digit: '1' }).then(() => log('pressed 1'));
})();
