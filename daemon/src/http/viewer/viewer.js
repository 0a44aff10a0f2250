// onair viewer: plays the stream over WHEP (draft-ietf-wish-whep) from this same origin.
// window.onair = { pc, state: 'connecting' | 'live' | 'failed', error, session } is for tests.
const $ = (id) => document.getElementById(id);
const video = $('video'), unmute = $('unmute'), stateEl = $('state'), errorEl = $('error'), infoEl = $('info');

const onair = (window.onair = { pc: null, state: 'connecting', error: null, session: null });
let current = null;  // { pc, session, stopped, watchdog } of the connection attempt in progress
let failures = 0;    // consecutive failures, for the reconnect backoff
let retryTimer;

function setState(state, error = null, note = '') {
  Object.assign(onair, { state, error });
  stateEl.dataset.state = stateEl.textContent = state;
  errorEl.textContent = errorEl.title = error ? error + note : '';
}

// Ends an attempt: closes its peer connection and DELETEs its WHEP session (if it got one).
function stop(conn) {
  if (!conn || conn.stopped) return;
  conn.stopped = true;
  clearTimeout(conn.watchdog);
  if (conn.session) fetch(conn.session, { method: 'DELETE', keepalive: true }).catch(() => {});
  conn.pc.close();
}

function fail(conn, message) {
  if (conn !== current || conn.stopped) return;
  stop(conn);
  const delay = Math.min(30, 2 ** failures++) * (0.75 + Math.random() / 2);  // 1, 2, 4 … 30 s ±25%
  setState('failed', message, ` — retrying in ${Math.round(delay)} s`);
  retryTimer = setTimeout(connect, delay * 1000);
}

// Resolves when ICE gathering is complete, or after `ms` anyway.
function iceGathered(pc, ms) {
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => pc.iceGatheringState === 'complete' && done();
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
    check();
  });
}

async function connect() {
  clearTimeout(retryTimer);
  stop(current);
  const pc = new RTCPeerConnection();
  const conn = (current = { pc, session: null, stopped: false, watchdog: null });
  onair.pc = pc;
  setState('connecting');

  const stream = new MediaStream();
  video.srcObject = stream;
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.ontrack = ({ track }) => { stream.addTrack(track); video.play().catch(() => {}); };
  pc.onconnectionstatechange = () => {
    if (conn !== current) return;
    switch (pc.connectionState) {
      case 'connected': clearTimeout(conn.watchdog); failures = 0; setState('live'); break;
      case 'failed': fail(conn, 'connection failed'); break;
      case 'disconnected':  // often recovers by itself; give it 5 s
        clearTimeout(conn.watchdog);
        conn.watchdog = setTimeout(() => fail(conn, 'connection lost'), 5000);
    }
  };

  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 2000);
    const res = await fetch('whep', {
      method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp,
    }).catch((e) => { throw new Error(`POST whep: ${e.message}`); });
    const body = await res.text();
    const location = res.headers.get('Location');
    if (location) conn.session = new URL(location, res.url).href;
    if (conn.stopped) {  // superseded, or the page was hidden, while the POST was in flight
      if (conn.session) fetch(conn.session, { method: 'DELETE', keepalive: true }).catch(() => {});
      return;
    }
    onair.session = conn.session;
    if (res.status !== 201) {
      throw new Error(`POST ${new URL(res.url).pathname}: HTTP ${res.status} ${res.statusText}${body.trim() ? ': ' + body.trim().slice(0, 200) : ''}`);
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    conn.watchdog = setTimeout(() => fail(conn, 'timed out connecting media'), 15000);
  } catch (e) {
    fail(conn, e.message || String(e));
  }
}

unmute.onclick = () => {
  video.muted = !video.muted;
  unmute.textContent = video.muted ? 'Unmute' : 'Mute';
  video.play().catch(() => {});
};

addEventListener('pagehide', () => { clearTimeout(retryTimer); stop(current); });
addEventListener('pageshow', (e) => { if (e.persisted) connect(); });  // back from the bfcache

async function pollStatus() {
  try {
    const res = await fetch('api/status', { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const s = await res.json();
    const name = [...new Set([s.channel, s.name].filter(Boolean))].join(' — ') || 'onair';
    document.title = `${name} · onair`;
    infoEl.textContent = [
      name,
      s.viewers != null && `${s.viewers} viewer${s.viewers === 1 ? '' : 's'}`,
      s.fps != null && `${Math.round(s.fps)} fps`,
    ].filter(Boolean).join(' · ');
  } catch (e) {
    infoEl.textContent = `status unavailable (${e.message})`;
  }
}

pollStatus();
setInterval(pollStatus, 2000);
// After `load`: a <video> that is waiting for media delays the load event, and the tab would
// show as loading for as long as (re)connecting takes.
if (document.readyState === 'complete') connect();
else addEventListener('load', connect, { once: true });
