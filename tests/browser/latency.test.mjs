// The small version of the latency benchmark (latency.mjs), run by ./dev test: headless
// Chromium plays a daemon's WHEP stream with our generic WHEP player, reads the stamp off the
// frames it presents, and the glass-to-glass and time-to-first-frame figures come out. What
// is asserted is what a viewer sees (stamped frames, in order, at the right size); the
// figures are printed, never judged.
//
//   ONAIR_URL=http://127.0.0.1:18080 [ONAIR_EXPECT_SIZE=1280x720] [ONAIR_TOKEN=…] \
//     node --test tests/browser/latency.test.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { measure } from './latency.mjs';

const MIN_READ = 30;

test('Chromium reads the stamp off the frames it presents', { timeout: 120_000 }, async () => {
  const base = process.env.ONAIR_URL;
  assert.ok(base, 'set ONAIR_URL to the daemon under test, e.g. ONAIR_URL=http://127.0.0.1:18080');
  const size = (process.env.ONAIR_EXPECT_SIZE || '1280x720').toLowerCase();
  const [width, height] = size.split('x').map(Number);
  const r = await measure({ whep: `${base}/whep`, token: process.env.ONAIR_TOKEN, width, height,
    seconds: 5, warmup: 1, joins: 3 });
  const g = r.glass;
  console.log(`glass-to-glass ${size}: p50 ${g.display.p50} ms, p95 ${g.display.p95} ms (${g.measured} frames; ` +
    `${g.read} stamps read, rejected ${g.rejected.sync} sync + ${g.rejected.crc} CRC, sequence ` +
    `${g.sequence.first}..${g.sequence.last} with ${g.sequence.missing} not seen); POST → first presented frame ` +
    `${r.firstFrame.joins.join(', ')} ms`);

  assert.deepEqual(r.pageErrors ?? [], [], 'errors in the page');
  assert.equal(g.stats.size, size, 'decoded size');
  assert.ok(g.read >= MIN_READ, `stamps read off presented frames: ${g.read}, want ≥ ${MIN_READ}`);
  const rejected = g.rejected.sync + g.rejected.crc;
  assert.ok(rejected <= Math.max(3, g.read / 20), `stamps rejected: ${rejected} of ${g.read + rejected}`);
  assert.equal(g.sequence.backwards, 0, 'frame numbers went backwards or repeated');
  assert.ok(g.sequence.last > g.sequence.first, 'frame numbers advance');
  for (const [name, v] of [['p50', g.display.p50], ['p95', g.display.p95]]) {
    assert.ok(Number.isFinite(v), `glass-to-glass ${name} is a number: ${v}`);
  }
  assert.equal(r.firstFrame.joins.length, 3, 'every join presented a frame');
  assert.ok(r.firstFrame.joins.every(Number.isFinite), `times to first frame: ${r.firstFrame.joins}`);
});
