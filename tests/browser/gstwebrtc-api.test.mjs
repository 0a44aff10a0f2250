// GStreamer's own browser client, npm gstwebrtc-api (not part of this repo), joins an onaird
// channel through a signalling server and plays it in headless Chromium: the consumer any
// webrtcsink deployment would use, watching onair unchanged.
//
//   ONAIR_GST_WS=ws://127.0.0.1:8443 ONAIR_CHANNEL=porch [ONAIR_EXPECT_SIZE=640x480] \
//     node --test gstwebrtc-api.test.mjs
//
// The page and the gstwebrtc-api bundle (from node_modules) are served from a loopback port
// the test opens (Chromium lets only a page from a local address reach a local WebSocket).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { keepIceOnLoopback, launch } from './chromium.mjs';

const WS = process.env.ONAIR_GST_WS;
const CHANNEL = process.env.ONAIR_CHANNEL;
const EXPECT_SIZE = process.env.ONAIR_EXPECT_SIZE;
const WITHIN_MS = 30_000;
const MIN_FRAMES = 30;

const require = createRequire(import.meta.url);
const packageDir = dirname(require.resolve('gstwebrtc-api/package.json'));
const bundle = join(packageDir, require('gstwebrtc-api/package.json').module);

// The page: find the producer whose meta.channel is CHANNEL, as the gstwebrtc-api demo does
// with its producer list, and start a consumer session (the producer offers).
const page = (ws, channel) => `<!doctype html><meta charset="utf-8"><video autoplay muted playsinline></video>
<script type="module">
import GstWebRTCAPI from './gstwebrtc-api.js';
const video = document.querySelector('video');
const api = new GstWebRTCAPI({ signalingServerUrl: ${JSON.stringify(ws)}, webrtcConfig: { iceServers: [] } });
window.result = { state: 'looking', errors: [] };
let session = null;
function join(producer) {
  if (session || producer.meta?.channel !== ${JSON.stringify(channel)}) return;
  session = api.createConsumerSession(producer.id);
  session.addEventListener('error', (e) => window.result.errors.push(e.message));
  session.addEventListener('stateChanged', () => { window.result.state = String(session.state); });
  session.addEventListener('streamsChanged', () => { if (session.streams.length) video.srcObject = session.streams[0]; });
  session.connect();
}
api.registerPeerListener({ producerAdded: join });
api.getAvailableProducers().forEach(join);
</script>`;

test('gstwebrtc-api plays an onaird channel', { timeout: 60_000 }, async (t) => {
  assert.ok(WS && CHANNEL, 'set ONAIR_GST_WS and ONAIR_CHANNEL');
  const files = {
    '/': ['text/html', page(WS, CHANNEL)],
    '/gstwebrtc-api.js': ['text/javascript', await readFile(bundle)],
  };
  const server = createServer((req, res) => {
    const [type, body] = files[req.url] ?? ['text/plain', 'not found'];
    res.writeHead(files[req.url] ? 200 : 404, { 'Content-Type': type }).end(body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const pageUrl = `http://127.0.0.1:${server.address().port}/`;
  const { context, close } = await launch();
  t.after(close);
  const tab = context.pages()[0] ?? (await context.newPage());
  const log = [];
  tab.on('console', (m) => log.push(`  console.${m.type()}: ${m.text()}`));
  tab.on('pageerror', (e) => log.push(`  pageerror: ${e.message}`));
  const ice = await keepIceOnLoopback(tab);

  const t0 = Date.now();
  await tab.goto(pageUrl);
  let seen;
  for (;;) {
    seen = await tab.evaluate(() => {
      const v = document.querySelector('video');
      return { ...window.result, frames: v.getVideoPlaybackQuality().totalVideoFrames, size: `${v.videoWidth}x${v.videoHeight}` };
    });
    if (seen.frames >= MIN_FRAMES) break;
    if (Date.now() - t0 > WITHIN_MS) {
      assert.fail(`within ${WITHIN_MS / 1000} s: ${seen.frames} frames; ${JSON.stringify(seen)}\n${log.join('\n')}`);
    }
    await tab.waitForTimeout(200);
  }
  if (EXPECT_SIZE) assert.equal(seen.size, EXPECT_SIZE, 'frame size');
  assert.deepEqual(seen.errors, [], 'gstwebrtc-api errors');
  console.log(`gstwebrtc-api OK: channel ${CHANNEL} via ${WS}: ${seen.frames} frames of ${seen.size} ` +
    `${((Date.now() - t0) / 1000).toFixed(1)} s after opening (session state ${seen.state})` +
    (ice.stripped.length ? `; removed non-loopback candidates: ${ice.stripped.length}` : ''));
});
