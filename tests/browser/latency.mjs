// Glass-to-glass latency and time to first frame in headless Chromium, for any WHEP server
// that sends onair's stamped test pattern (onaird, or tests/bench/aiortc_caster.py).
//
//   node tests/browser/latency.mjs --whep http://127.0.0.1:8080/whep --width 640 --height 480 \
//     [--seconds 20] [--warmup 2] [--joins 10] [--gap-ms 1000] [--token T] [--relay IP:PORT]
//
// prints one JSON object (see `measure`). The player is ours and generic: a plain
// RTCPeerConnection, recvonly video + audio, the whole offer POSTed to the WHEP URL once ICE
// gathering is done (no trickle), optionally with a Bearer token. Its page is served at the
// WHEP server's own origin (Playwright answers a made-up path), so the POST is same-origin
// and needs no CORS grant.
//
// Glass-to-glass: on every frame Chromium presents (video.requestVideoFrameCallback), the
// frame is drawn onto a canvas, the stamp is read off it (layout: hal/src/synthetic/stamp.rs)
// and latency = performance.timeOrigin + metadata.expectedDisplayTime − the stamp's wall
// clock. expectedDisplayTime is when the compositor expects the frame to be visible, the
// nearest the browser gets to the glass (presentationTime, when the frame was handed to the
// compositor, and receiveTime, when its last packet arrived, are reported beside it). The
// stamp's clock is the capture wall clock in ms; both clocks are this machine's.
// Time to first frame: performance.now() just before the POST is sent → expectedDisplayTime
// of the first frame presented; a fresh peer connection and video element per join.
//
// --relay IP:PORT: the player reaches the server only through that UDP address (a bad link
// of its own, tests/src/link.rs): the answer's candidates are replaced by one there, as
// `link::through` does for the webrtc-rs viewer.
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { launch } from './chromium.mjs';

// ---- runs in the page ----------------------------------------------------------------------
function pageCode() {
  /** CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, unreflected, no final XOR. */
  function crc16(bytes) {
    let crc = 0xffff;
    for (const byte of bytes) {
      crc ^= byte << 8;
      for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
  }

  /** Where the stamp sits in a W x H source picture (stamp.rs, "Layout"), or null. */
  function stampLayout(W, H) {
    let bars = Math.floor((H * 2) / 3);
    bars = bars >= 16 ? bars - (bars % 16) : bars - (bars % 2);
    const fit = Math.min(Math.floor(W / 36), Math.floor((2 * (H - bars)) / 7));
    const block = fit >= 16 ? fit - (fit % 16) : fit >= 2 ? fit - (fit % 2) : 0;
    if (!block) return null;
    const align = block % 16 === 0 ? 16 : 2;
    const left = Math.floor((W - 36 * block) / 2 / align) * align;
    const top = Math.floor((H - 3 * block - Math.floor(block / 2)) / align) * align;
    return { block, left, top };
  }

  const SYNC = [[0, true], [1, false], [34, false], [35, true]];

  /**
   * Reads the stamp off the current frame of `video` (any size: the layout is computed for
   * the source size and scaled, as read_stamp_scaled does). Returns { sequence, wallclockMs }
   * or { reject: why }.
   */
  function readStamp(video, ctx, source) {
    const w = video.videoWidth, h = video.videoHeight;
    const L = stampLayout(source.width, source.height);
    const map = (v, pic, src) => Math.floor((v * pic) / src);
    const y0 = map(L.top, h, source.height), y1 = Math.min(h, map(L.top + 3 * L.block, h, source.height) + 1);
    if (ctx.canvas.width !== w || ctx.canvas.height !== y1 - y0) Object.assign(ctx.canvas, { width: w, height: y1 - y0 });
    ctx.drawImage(video, 0, y0, w, y1 - y0, 0, 0, w, y1 - y0);
    const { data } = ctx.getImageData(0, 0, w, y1 - y0);
    const inset = Math.floor(L.block / 4), side = Math.max(Math.floor(L.block / 2), 1);
    const white = (row, col) => {
      const sx = L.left + col * L.block + inset, sy = L.top + row * L.block + inset;
      const x0 = map(sx, w, source.width), x1 = Math.min(Math.max(map(sx + side, w, source.width), x0 + 1), w);
      const ya = map(sy, h, source.height), yb = Math.min(Math.max(map(sy + side, h, source.height), ya + 1), h);
      let sum = 0, count = 0;
      for (let y = ya; y < yb; y++) {
        for (let x = x0; x < x1; x++) {
          const p = ((y - y0) * w + x) * 4;
          sum += data[p] + data[p + 1] + data[p + 2];
          count++;
        }
      }
      return count > 0 && sum >= 3 * 128 * count;  // mean of R, G, B as luma
    };
    for (let row = 0; row < 3; row++) {
      if (SYNC.some(([col, want]) => white(row, col) !== want)) return { reject: 'sync' };
    }
    const bits = [];
    for (let bit = 0; bit < 96; bit++) bits.push(white(Math.floor(bit / 32), 2 + (bit % 32)) ? 1 : 0);
    const field = (from, n) => bits.slice(from, from + n).reduce((acc, b) => acc * 2 + b, 0);
    const sequence = field(0, 32), wallclockMs = field(32, 48), crc = field(80, 16);
    const bytes = [];
    for (let i = 3; i >= 0; i--) bytes.push(Math.floor(sequence / 2 ** (8 * i)) % 256);
    for (let i = 5; i >= 0; i--) bytes.push(Math.floor(wallclockMs / 2 ** (8 * i)) % 256);
    if (crc16(bytes) !== crc) return { reject: 'crc' };
    return { sequence, wallclockMs };
  }

  /** Resolves once ICE gathering is complete (at most 2 s: then with what there is). */
  function gathered(pc) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => pc.iceGatheringState === 'complete' && resolve();
      pc.addEventListener('icegatheringstatechange', done);
      setTimeout(resolve, 2000);
    });
  }

  /**
   * Joins `whep` as a WHEP viewer. `onFrame(now, metadata, video)` is called for every
   * presented video frame. Returns { postAt, stop() }.
   */
  /** `answer` with its UDP candidates replaced by one at `relay` ("ip:port"), no TCP ones. */
  function through(answer, relay) {
    const [ip, port] = [relay.slice(0, relay.lastIndexOf(':')), relay.slice(relay.lastIndexOf(':') + 1)];
    let placed = false;
    return answer.split('\r\n').filter((line) => {
      if (!line.startsWith('a=candidate:')) return true;
      const f = line.slice('a=candidate:'.length).split(' ');
      if (placed || f.length < 8 || f[2].toLowerCase() !== 'udp') return false;
      return (placed = true);
    }).map((line) => {
      if (!line.startsWith('a=candidate:')) return line;
      const f = line.slice('a=candidate:'.length).split(' ');
      return `a=candidate:${f[0]} ${f[1]} udp ${f[3]} ${ip} ${port} typ host`;
    }).join('\r\n');
  }

  async function join({ whep, token, source, relay }, onFrame) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const video = Object.assign(document.createElement('video'), { muted: true, autoplay: true, playsInline: true,
      width: source.width, height: source.height });
    document.body.append(video);
    const frame = (now, metadata) => {
      onFrame(now, metadata, video);
      video.requestVideoFrameCallback(frame);
    };
    video.requestVideoFrameCallback(frame);
    pc.ontrack = (e) => {
      if (e.track.kind === 'video') video.srcObject = new MediaStream([e.track]);
    };
    await pc.setLocalDescription();
    await gathered(pc);
    const auth = token ? { Authorization: `Bearer ${token}` } : {};
    const postAt = performance.now();
    const res = await fetch(whep, { method: 'POST', headers: { 'Content-Type': 'application/sdp', ...auth },
      body: pc.localDescription.sdp });
    const answer = await res.text();
    if (res.status !== 201) {
      pc.close();
      video.remove();
      throw new Error(`POST ${whep}: HTTP ${res.status}: ${answer.slice(0, 200)}`);
    }
    const session = new URL(res.headers.get('Location'), whep).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: relay ? through(answer, relay) : answer });
    // DELETE first, as a WHEP player leaving does: closing first would end the session
    // through DTLS before the server hears the DELETE.
    const stop = async () => {
      const stats = await inbound(pc);
      const del = await fetch(session, { method: 'DELETE', headers: auth }).then((r) => r.status, (e) => String(e));
      pc.close();
      video.remove();
      return { ...stats, delete: del };
    };
    return { postAt, stop };
  }

  /** What the video inbound-rtp stats say: decoded/dropped frames, size, codec. */
  async function inbound(pc) {
    const report = await pc.getStats();
    for (const s of report.values()) {
      if (s.type !== 'inbound-rtp' || s.kind !== 'video') continue;
      const codec = report.get(s.codecId);
      return { framesDecoded: s.framesDecoded, framesDropped: s.framesDropped, framesReceived: s.framesReceived,
        size: `${s.frameWidth}x${s.frameHeight}`, codec: codec && `${codec.mimeType} ${codec.sdpFmtpLine ?? ''}`.trim() };
    }
    return {};
  }

  const timeout = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no frame within ${ms} ms`)), ms));

  /** Plays for `seconds` and reads the stamp off every presented frame. */
  async function glass({ seconds, warmup, ...target }) {
    const ctx = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
    const frames = [], rejected = { sync: 0, crc: 0 };
    let firstPresented = null, lastPresented = null, firstAt = null, lastAt = null, callbacks = 0, warm = null;
    const viewer = await join(target, (now, md, video) => {
      callbacks++;
      firstPresented ??= md.presentedFrames;
      firstAt ??= now;
      [lastPresented, lastAt] = [md.presentedFrames, now];
      const wall = (t) => performance.timeOrigin + t;
      warm ??= now + warmup * 1000;
      const stamp = readStamp(video, ctx, target.source);
      if (stamp.reject) return void rejected[stamp.reject]++;
      frames.push({ sequence: stamp.sequence, warm: now >= warm,
        display: wall(md.expectedDisplayTime) - stamp.wallclockMs,
        presentation: wall(md.presentationTime) - stamp.wallclockMs,
        receive: md.receiveTime === undefined ? null : wall(md.receiveTime) - stamp.wallclockMs });
    });
    await new Promise((resolve) => setTimeout(resolve, (seconds + warmup) * 1000));
    const stats = await viewer.stop();
    // Frames the compositor presented while callbacks ran (rVFC may skip some when busy).
    const presented = lastPresented === null ? 0 : lastPresented - firstPresented + 1;
    const fps = lastAt > firstAt ? ((lastPresented - firstPresented) * 1000) / (lastAt - firstAt) : null;
    return { frames, rejected, callbacks, presented, fps, stats };
  }

  /** `joins` joins one after another, `gapMs` apart: POST → first presented frame of each. */
  async function firstFrames({ joins, gapMs, ...target }) {
    const out = [];
    for (let i = 0; i < joins; i++) {
      let first;
      const presented = new Promise((resolve) => { first = resolve; });
      const viewer = await join(target, (now, md) => first(md));
      try {
        const md = await Promise.race([presented, timeout(10_000, `join ${i + 1}`)]);
        out.push({ ms: md.expectedDisplayTime - viewer.postAt, presentationMs: md.presentationTime - viewer.postAt });
      } finally {
        await viewer.stop();
      }
      await new Promise((resolve) => setTimeout(resolve, gapMs));
    }
    return out;
  }

  window.bench = { glass, firstFrames };
}

// ---- runs in Node ------------------------------------------------------------------------

/** The value at quantile `q` (nearest rank) of `values`, or null for none. */
export function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

const round = (v) => (v === null ? null : Math.round(v * 10) / 10);

/** Figures from the per-frame records of one glass-to-glass run. */
function summarise({ frames, rejected, callbacks, presented, fps, stats }) {
  const warm = frames.filter((f) => f.warm);
  const pick = (key) => warm.map((f) => f[key]).filter((v) => v !== null);
  let gaps = 0, missing = 0, largest = 0, backwards = 0;
  for (let i = 1; i < frames.length; i++) {
    const step = frames[i].sequence - frames[i - 1].sequence;
    if (step > 1) { gaps++; missing += step - 1; largest = Math.max(largest, step - 1); }
    if (step <= 0) backwards++;
  }
  const figure = (key) => ({ p50: round(quantile(pick(key), 0.5)), p95: round(quantile(pick(key), 0.95)) });
  return {
    read: frames.length, measured: warm.length, rejected, callbacks, presented, fps: round(fps),
    sequence: { first: frames[0]?.sequence ?? null, last: frames.at(-1)?.sequence ?? null, gaps, missing, largest, backwards },
    display: figure('display'), presentation: figure('presentation'), receive: figure('receive'),
    max: round(Math.max(...pick('display'))), stats,
  };
}

/**
 * Measures a WHEP server in a fresh headless Chromium. Returns
 * { glass: {read, rejected, sequence, display: {p50, p95}, …}, firstFrame: {p50, joins: [ms…]} };
 * `joins: 0` or `seconds: 0` skips that part.
 */
export async function measure({ whep, token, width, height, seconds = 20, warmup = 2, joins = 10, gapMs = 1000, relay }) {
  const { context, close } = await launch();
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const url = new URL('/__bench.html', whep).href;
    await page.route(url, (route) => route.fulfill({ contentType: 'text/html',
      body: `<!doctype html><meta charset="utf-8"><title>bench</title><body><script>(${pageCode})()</script>` }));
    await page.goto(url);
    const target = { whep, token, relay, source: { width, height } };
    const out = {};
    if (seconds > 0) out.glass = summarise(await page.evaluate((a) => window.bench.glass(a), { ...target, seconds, warmup }));
    if (joins > 0) {
      const list = await page.evaluate((a) => window.bench.firstFrames(a), { ...target, joins, gapMs });
      out.firstFrame = { p50: round(quantile(list.map((j) => j.ms), 0.5)), min: round(Math.min(...list.map((j) => j.ms))),
        max: round(Math.max(...list.map((j) => j.ms))), joins: list.map((j) => round(j.ms)),
        presentationP50: round(quantile(list.map((j) => j.presentationMs), 0.5)) };
    }
    if (errors.length) out.pageErrors = errors;
    return out;
  } finally {
    await close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({ options: {
    whep: { type: 'string' }, token: { type: 'string' }, width: { type: 'string' }, height: { type: 'string' },
    seconds: { type: 'string', default: '20' }, warmup: { type: 'string', default: '2' },
    joins: { type: 'string', default: '10' }, 'gap-ms': { type: 'string', default: '1000' },
    relay: { type: 'string' },
  } });
  if (!values.whep || !values.width || !values.height) {
    console.error('usage: latency.mjs --whep URL --width W --height H [--seconds 20] [--warmup 2] [--joins 10] [--gap-ms 1000] [--token T] [--relay IP:PORT]');
    process.exit(2);
  }
  const result = await measure({ whep: values.whep, token: values.token, width: Number(values.width),
    height: Number(values.height), seconds: Number(values.seconds), warmup: Number(values.warmup),
    joins: Number(values.joins), gapMs: Number(values['gap-ms']), relay: values.relay });
  console.log(JSON.stringify(result));
}
