// Plays a recording from onaird's viewer page in headless Chromium, as a person would: opens
// the page, opens the recordings list, picks the newest finished segment, and watches it
// play. Prints JSON: the segment, how far it played, its size and the colour bars sampled
// from the playing <video>.
//
//   node recordings.mjs --url 'http://127.0.0.1:18080/?token=…' [--seconds 1.5]
import { parseArgs } from 'node:util';
import { launch } from './chromium.mjs';

// Runs in the page: the 8 bars' colours at y = height / 3 of the playback video.
function sample() {
  const video = document.getElementById('playback');
  const w = video.videoWidth, h = video.videoHeight;
  const canvas = Object.assign(document.createElement('canvas'), { width: w, height: h });
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, w, h);
  const y = Math.floor(h / 3);
  const bars = Array.from({ length: 8 }, (_, i) => {
    const x = Math.floor(((i + 0.5) * w) / 8);
    const d = ctx.getImageData(x - 2, y - 2, 5, 5).data;
    const sum = [0, 0, 0];
    for (let p = 0; p < d.length; p += 4) for (let c = 0; c < 3; c++) sum[c] += d[p + c];
    return sum.map((v) => Math.round(v / 25));
  });
  return { width: w, height: h, currentTime: video.currentTime, bars, error: video.error?.message ?? null };
}

export async function playRecording({ url, seconds }) {
  const { context, close } = await launch();
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    await page.locator('#show-recordings').click({ timeout: 15_000 });
    // The newest is still being written: take the one before it.
    const finished = page.locator('#recording-list li button').nth(1);
    const name = await finished.getAttribute('data-name', { timeout: 15_000 });
    await finished.click();
    await page.waitForFunction((s) => {
      const video = document.getElementById('playback');
      return video.error || (video.readyState >= 2 && video.currentTime >= s);
    }, seconds, { timeout: 15_000 });
    const played = await page.evaluate(sample);
    return { name, ...played, pageErrors: errors };
  } finally {
    await close();
  }
}

const { values } = parseArgs({ options: {
  url: { type: 'string' }, seconds: { type: 'string', default: '1.5' },
} });
if (!values.url) {
  console.error('usage: node recordings.mjs --url PAGE_URL [--seconds 1.5]');
  process.exit(2);
}
console.log(JSON.stringify(await playRecording({ url: values.url, seconds: Number(values.seconds) })));
