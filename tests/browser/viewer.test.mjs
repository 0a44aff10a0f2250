// Plays the viewer page in headless Chromium and checks what comes out of it: onaird's own
// page (its channel through the built-in service), and onair-signal's /c/{channel} for a camera
// registered there (tests/signaling/run starts both).
//
//   ONAIR_URL=http://127.0.0.1:18080 ONAIR_SIGNAL_URL=http://127.0.0.1:18443 ONAIR_CHANNEL=porch \
//     [ONAIR_TOKEN=viewer-token] [ONAIR_EXPECT_SIZE=640x480] [ONAIR_SCREENSHOT=/tmp/viewer.png] \
//     node --test viewer.test.mjs
//
// Expects the test pattern: the top 2/3 of the picture holds 8 equal-width 75% colour bars.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { keepIceOnLoopback, launch } from './chromium.mjs';

const URL_ = process.env.ONAIR_URL;
const EXPECT_SIZE = process.env.ONAIR_EXPECT_SIZE;
const SCREENSHOT = process.env.ONAIR_SCREENSHOT;
const SIGNAL_URL = process.env.ONAIR_SIGNAL_URL;
const TOKEN = process.env.ONAIR_TOKEN;
const WITHIN_MS = 30_000;
const MIN_FRAMES = 30;
const TOLERANCE = 24;
const BARS = [
  ['white', [191, 191, 191]], ['yellow', [191, 191, 0]], ['cyan', [0, 191, 191]], ['green', [0, 191, 0]],
  ['magenta', [191, 0, 191]], ['red', [191, 0, 0]], ['blue', [0, 0, 191]], ['black', [0, 0, 0]],
];

// Runs in the page: the viewer's state plus the inbound-rtp stats of its peer connection.
async function readStats() {
  const { pc, state, error, session } = window.onair ?? {};
  const out = { state, error, session };
  if (!pc) return out;
  const report = await pc.getStats();
  for (const s of report.values()) {
    if (s.type !== 'inbound-rtp') continue;
    const codec = report.get(s.codecId);
    out[s.kind] = {
      packetsReceived: s.packetsReceived, framesDecoded: s.framesDecoded,
      frameWidth: s.frameWidth, frameHeight: s.frameHeight,
      codec: codec && `${codec.mimeType.split('/')[1]}${codec.sdpFmtpLine ? ` (${codec.sdpFmtpLine})` : ''}`,
    };
  }
  return out;
}

// Runs in the page: draws the current video frame into a canvas and averages a 5x5 block
// at the centre of each of the 8 bars, at y = height / 3.
function sampleBars() {
  const video = document.querySelector('video');
  const w = video.videoWidth, h = video.videoHeight;
  if (video.readyState < 2 || !w || !h) return { error: `video element has no frame (readyState ${video.readyState})` };
  const canvas = Object.assign(document.createElement('canvas'), { width: w, height: h });
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, w, h);
  const y = Math.floor(h / 3);
  const colours = Array.from({ length: 8 }, (_, i) => {
    const x = Math.floor(((i + 0.5) * w) / 8);
    const d = ctx.getImageData(x - 2, y - 2, 5, 5).data;
    const sum = [0, 0, 0];
    for (let p = 0; p < d.length; p += 4) for (let c = 0; c < 3; c++) sum[c] += d[p + c];
    return sum.map((v) => Math.round(v / 25));
  });
  return { w, h, colours };
}

// Opens `pageUrl`, waits for frames and audio, checks size and colours, then hides the page
// and expects the session to end (`sessionsUrl` counts the camera's or channel's sessions).
async function playPage(t, pageUrl, expectSize, sessionsOf) {
  const { context, close } = await launch();
  t.after(close);
  const page = context.pages()[0] ?? (await context.newPage());
  const log = [];
  page.on('console', (m) => log.push(`  console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`  pageerror: ${e.message}`));
  const ice = await keepIceOnLoopback(page);
  const details = (stats) => `\n  viewer/stats: ${JSON.stringify(stats)}\n${log.join('\n')}`;

  // 1. Frames and audio packets arrive within 10 s of opening the page, and the page says it
  // is live. (Frames can be decoded a moment before Chromium reports the connection state:
  // a join starts with the kept GOP, fast-forward, so 30 frames take ~150 ms.)
  const t0 = Date.now();
  await page.goto(pageUrl);
  let stats;
  for (;;) {
    stats = await page.evaluate(readStats);
    if (stats.video?.framesDecoded >= MIN_FRAMES && stats.audio?.packetsReceived > 0 && stats.state === 'live') break;
    if (Date.now() - t0 > WITHIN_MS) {
      assert.fail(`within ${WITHIN_MS / 1000} s: wanted >= ${MIN_FRAMES} video frames decoded, audio packets ` +
        `and the page live; got ${stats.video ? `${stats.video.framesDecoded ?? 0} frames` : 'no inbound video'}, ` +
        `${stats.audio ? `${stats.audio.packetsReceived ?? 0} packets` : 'no inbound audio'}, state ${stats.state}` +
        details(stats));
    }
    await page.waitForTimeout(200);
  }
  const elapsed = (Date.now() - t0) / 1000;
  if (ice.stripped.length) console.log(`warning: removed non-loopback candidates:\n  ${ice.stripped.join('\n  ')}`);

  // 2. The page's onStat reports real figures from getStats() (once a second).
  const stat = await figures(page, details);

  // 3. Picture size.
  const size = `${stats.video.frameWidth}x${stats.video.frameHeight}`;
  if (expectSize) assert.equal(size, expectSize.trim().toLowerCase(), 'frame size');

  // 4. Colour bars.
  const bars = await page.evaluate(sampleBars);
  assert.ok(!bars.error, bars.error);
  const wrong = BARS.flatMap(([name, want], i) => {
    const got = bars.colours[i];
    return got.some((v, c) => Math.abs(v - want[c]) > TOLERANCE) ? [`${name}: got rgb(${got}) want rgb(${want})`] : [];
  });
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT });
  assert.deepEqual(wrong, [], `bar colours at y=${Math.floor(bars.h / 3)} off by more than ±${TOLERANCE}` +
    ' (green ≈ 161 and magenta ≈ (205,30,189) mean BT.601 pixels that Chrome decoded as BT.709, which it' +
    ' assumes when the H.264 VUI carries no colour description: signal matrix_coefficients 6 or 5 there)');

  // 5. pagehide ends the session (endSession on the signalling WebSocket): the camera's
  // session count goes back to what it was. (Fired by hand: Playwright does not report what a
  // document being unloaded sends.)
  assert.ok(stats.session, `viewer has no session${details(stats)}`);
  assert.equal(await sessionsOf(), 1, 'sessions while watching');
  await page.evaluate(() => dispatchEvent(new PageTransitionEvent('pagehide')));
  let sessions;
  for (const deadline = Date.now() + 5000; Date.now() < deadline; await page.waitForTimeout(100)) {
    if ((sessions = await sessionsOf()) === 0) break;
  }
  assert.equal(sessions, 0, 'the session did not end within 5 s of pagehide');

  console.log(`viewer OK (${pageUrl}): ${size} ${stats.video.codec}, ${stats.video.framesDecoded} frames decoded ` +
    `${elapsed.toFixed(1)} s after opening, audio ${stats.audio.codec} ${stats.audio.packetsReceived} packets; ` +
    `stat ${JSON.stringify(stat)}; session ended on pagehide; bars ${BARS.map(([n], i) => `${n}(${bars.colours[i]})`).join(' ')}` +
    (SCREENSHOT ? `; screenshot ${SCREENSHOT}` : ''));
}

// Waits (10 s at most) for onStat figures with pictures and bits flowing (the rate needs two
// reports) and for the page to show them, and checks they are numbers: fps > 0, kbps > 0,
// size, RTT, loss. The stat.
async function figures(page, details) {
  const shown = / fps · \d+ kb\/s · rtt \d+ ms · loss /;
  let stat, line;
  for (const deadline = Date.now() + WITHIN_MS; Date.now() < deadline; await page.waitForTimeout(200)) {
    ({ stat, line } = await page.evaluate(() => ({
      stat: window.onair?.stat ?? null, line: document.getElementById('info').textContent,
    })));
    if (stat?.fps > 0 && stat?.kbps > 0 && shown.test(line)) break;
  }
  const why = `onStat: ${JSON.stringify(stat)}${details(stat)}`;
  assert.ok(stat?.fps > 0 && stat?.kbps > 0, `no fps or kb/s: ${why}`);
  assert.ok(stat.width > 0 && stat.height > 0 && stat.framesDecoded > 0, why);
  assert.equal(typeof stat.rttMs, 'number', `rtt: ${why}`);
  assert.ok(stat.lossPercent >= 0 && stat.lossPercent <= 100, `loss: ${why}`);
  assert.match(line, shown, 'the page shows the figures');
  return stat;
}

const json = async (url) => (await fetch(url)).json();

test("onaird's page plays its channel", { timeout: 60_000 }, async (t) => {
  assert.ok(URL_, 'set ONAIR_URL to the daemon under test, e.g. ONAIR_URL=http://127.0.0.1:18080');
  // With ONAIR_TOKEN (the camera's access.viewer_token) the page needs it: 401 without.
  const query = TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : '';
  if (TOKEN) assert.equal((await fetch(`${URL_}/`)).status, 401, 'the page without the token');
  await playPage(t, `${URL_}/${query}`, EXPECT_SIZE, async () => (await json(`${URL_}/api/status${query}`)).sessions);
});

test("onair-signal's /c/{channel} plays a camera registered there", { timeout: 60_000 }, async (t) => {
  const channel = process.env.ONAIR_CHANNEL;
  assert.ok(SIGNAL_URL && channel, 'set ONAIR_SIGNAL_URL and ONAIR_CHANNEL to an onair-signal and a channel live there');
  await playPage(t, `${SIGNAL_URL}/c/${channel}`, EXPECT_SIZE,
    async () => (await json(`${SIGNAL_URL}/api/channels`)).find((c) => c.channel === channel)?.viewers);
});

test("the page gives the browser's peer connection the camera's ICE servers", { timeout: 60_000 }, async (t) => {
  assert.ok(URL_, 'set ONAIR_URL to the daemon under test');
  const query = TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : '';
  // What onaird answers: its webrtc.ice_servers, as RTCIceServer dictionaries.
  const response = await fetch(`${URL_}/api/ice-servers${query}`);
  assert.equal(response.status, 200, 'GET /api/ice-servers');
  assert.ok(Array.isArray(await response.json()), '/api/ice-servers is a JSON array');
  // onair.js takes what the service answers (here a STUN server in place of the test
  // camera's none) into the RTCPeerConnection it makes.
  const { context, close } = await launch();
  t.after(close);
  const page = context.pages()[0] ?? (await context.newPage());
  const servers = [{ urls: ['stun:127.0.0.1:9'] }];
  await page.route('**/api/ice-servers*', (route) => route.fulfill({ json: servers }));
  await page.goto(`${URL_}/${query}`);
  let config = null;
  for (const deadline = Date.now() + WITHIN_MS; Date.now() < deadline && !config; await page.waitForTimeout(100)) {
    config = await page.evaluate(() => window.onair?.pc?.getConfiguration().iceServers ?? null);
  }
  assert.deepEqual(config?.map((s) => s.urls).flat(), ['stun:127.0.0.1:9'], `the page's iceServers: ${JSON.stringify(config)}`);
  await page.evaluate(() => window.onair.close());
});
