// Watches a Janus VideoRoom in headless Chromium through the WHIP front's viewer page
// (tests/whip/janus_whip.py, GET /watch.html): the page POSTs /watch/<room>, answers Janus's
// offer and PATCHes the answer back; this waits until Chromium has decoded enough frames.
//
//   node tests/browser/sfu.mjs --front http://127.0.0.1:8090 [--room 1234] [--frames 30] [--within 15]
//
// prints one JSON object {framesDecoded, width, height, audioPacketsReceived,
// totalSamplesReceived, audioLevel, connectionState, …} and exits 0 once framesDecoded ≥
// --frames within --within seconds, 1 otherwise (with the same JSON and the reason on stderr).
// Janus runs in the SFU's network namespace (tests/src/sfu.rs), so this runs there too.
import { parseArgs } from 'node:util';
import { launch } from './chromium.mjs';

export async function watchSfu({ front, room = 1234, frames = 30, within = 15 }) {
  const { context, close } = await launch();
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    const url = new URL(`/watch.html?room=${encodeURIComponent(room)}`, front).href;
    const t0 = Date.now();
    await page.goto(url, { timeout: 10_000 });
    let stats = {};
    let reason = null;
    const deadline = t0 + within * 1000;
    for (;;) {
      stats = await page.evaluate(() => window.stats());
      if (stats.framesDecoded >= frames) break;
      if (stats.error) { reason = stats.error; break; }
      if (Date.now() > deadline) {
        reason = `${stats.framesDecoded} of ${frames} frames decoded within ${within} s (connection ${stats.connectionState})`;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const ms = Date.now() - t0;
    // Leave as a viewer should: the front destroys the Janus session.
    const del = await page.evaluate(async () => {
      if (!window.resource) return null;
      const r = await fetch(window.resource, { method: 'DELETE' });
      return r.status;
    }).catch((e) => String(e));
    return { ok: reason === null, ...stats, ms, delete: del, ...(reason ? { reason } : {}), pageErrors };
  } finally {
    await close();
  }
}

const { values } = parseArgs({ options: {
  front: { type: 'string' }, room: { type: 'string', default: '1234' },
  frames: { type: 'string', default: '30' }, within: { type: 'string', default: '15' },
} });
if (!values.front) {
  console.error('usage: node sfu.mjs --front http://127.0.0.1:8090 [--room 1234] [--frames 30] [--within 15]');
  process.exit(2);
}
// Bounded as a whole too: a hung Chromium must not hang the test.
const hardLimit = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, reason: 'sfu.mjs did not finish within its time limit' }));
  process.exit(1);
}, (Number(values.within) + 30) * 1000);
try {
  const result = await watchSfu({ front: values.front, room: Number(values.room),
    frames: Number(values.frames), within: Number(values.within) });
  console.log(JSON.stringify(result));
  if (!result.ok) console.error(`sfu.mjs: ${result.reason}`);
  process.exitCode = result.ok ? 0 : 1;
} catch (e) {
  console.log(JSON.stringify({ ok: false, reason: String(e) }));
  console.error(`sfu.mjs: ${e}`);
  process.exitCode = 1;
} finally {
  clearTimeout(hardLimit);
}
