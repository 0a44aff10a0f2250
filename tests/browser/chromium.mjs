// Shared headless-Chromium launcher for the onair browser tests.
//
// Chromium is always the system one (/usr/bin/chromium, override with $CHROMIUM), launched by
// playwright-core (which never downloads browsers) in a fresh temporary profile that is deleted
// on close, and configured so that nothing, WebRTC included, talks to anything but loopback.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

// Chromium honours only the LAST --disable-features switch and Playwright passes one of its own
// first, so ours repeats Playwright's list (playwright-core 1.65.1, chromiumSwitches.ts) or
// Playwright's would be silently dropped.
const playwrightDisabledFeatures = [
  'AvoidUnnecessaryBeforeUnloadCheckSync', 'DestroyProfileOnBrowserClose', 'HttpsUpgrades',
  'HttpsFirstBalancedModeAutoEnable', 'LensOverlay', 'MediaRouter', 'PaintHolding',
  'ThirdPartyStoragePartitioning', 'AvoidCorsURLLoaderRestartOnRedirect', 'OptimizationHints',
  'NetworkTimeServiceQuerying', 'AimEnabled', 'PreconnectToSearch',
];
const ourDisabledFeatures = [
  // No "<uuid>.local" ICE candidates: Chromium would announce them over mDNS (multicast to
  // 224.0.0.251 / ff02::fb) and a peer would have to resolve them the same way.
  'WebRtcHideLocalIpsWithMdns',
  // Cast/DIAL discovery (SSDP/mDNS multicast) and assorted background fetches.
  'DialMediaRouteProvider', 'GlobalMediaControls', 'Translate', 'OptimizationGuideModelDownloading',
  'AutofillServerCommunication', 'CertificateTransparencyComponentUpdater',
];

export const chromiumArgs = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', '--no-default-browser-check', '--no-pings', '--disable-domain-reliability',
  '--disable-client-side-phishing-detection', '--disable-default-apps', '--disable-extensions',
  '--metrics-recording-only', '--safebrowsing-disable-auto-update',
  // Every host name but localhost fails to resolve: no DNS traffic, no surprise connections.
  // (IP literals go through these rules too, hence the loopback EXCLUDEs.)
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]',
  `--disable-features=${[...new Set([...playwrightDisabledFeatures, ...ourDisabledFeatures])].join(',')}`,
  // WebRTC on loopback only. Without media (camera/mic) permission Chromium does not enumerate
  // interfaces anyway: it would offer host candidates on the default-route interface (e.g. eth0),
  // and never loopback, whatever --allow-loopback-in-peer-connection says. This policy makes it
  // bind its ICE sockets to the wildcard address and offer no host candidates at all; it then
  // sends connectivity checks to the server's candidates (127.0.0.1 in tests), so the kernel
  // picks 127.0.0.1 as source and the server learns the browser as a peer-reflexive candidate:
  // the very path a real browser takes when its mDNS candidates can't be resolved.
  '--webrtc-ip-handling-policy=default_public_interface_only',
  '--allow-loopback-in-peer-connection',  // only matters if interface enumeration were allowed
  // Muted autoplay is allowed anyway; this also lets a test unmute without a user gesture.
  '--autoplay-policy=no-user-gesture-required',
];

/** Launches Chromium in a fresh profile; returns { context, close }. `args` are appended. */
export async function launch({ args = [], ...options } = {}) {
  const userDataDir = await mkdtemp(join(tmpdir(), 'onair-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: [...chromiumArgs, ...args],
      viewport: { width: 1280, height: 800 },
      ...options,
    });
    const close = async () => {
      await context.close().catch(() => {});
      await rm(userDataDir, { recursive: true, force: true });
    };
    return { context, close };
  } catch (e) {
    await rm(userDataDir, { recursive: true, force: true });
    throw e;
  }
}

/** True for 127.0.0.0/8 and ::1 (the only addresses ICE candidates may have in tests). */
export const isLoopback = (addr) => /^127\.\d+\.\d+\.\d+$/.test(addr) || addr === '::1';

/** `sdp` without its non-loopback candidate lines, which are added to `stripped`. */
function loopbackOnly(sdp, stripped) {
  return sdp.split(/\r?\n/).filter((line) => {
    const m = /^a=candidate:\S+ \d+ \S+ \d+ (\S+) /.exec(line);
    if (!m || isLoopback(m[1])) return true;
    stripped.push(line);
    return false;
  }).join('\r\n');
}

/**
 * Makes the page's signalling go through Playwright and strips every ICE candidate that is
 * not on loopback from what the server sends (a mis-configured server, or one that gathers on
 * all interfaces, must not make the browser send checks elsewhere): SDP answers of POSTs to a
 * WHEP endpoint, and SDP and ICE in `peer` messages on the signalling WebSocket (`/ws`).
 * Returns a record of what was seen: { answers, stripped }.
 */
export async function keepIceOnLoopback(page, urlGlob = '**/whep') {
  const seen = { answers: 0, stripped: [] };
  await page.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((message) => {
      try {
        const msg = JSON.parse(message);
        if (msg.type === 'peer' && msg.sdp) {
          seen.answers++;
          msg.sdp.sdp = loopbackOnly(msg.sdp.sdp, seen.stripped);
          return ws.send(JSON.stringify(msg));
        }
        if (msg.type === 'peer' && msg.ice && msg.ice.candidate && !loopbackOnly(`a=${msg.ice.candidate}`, seen.stripped)) return;
      } catch { /* not JSON: pass it on as it is */ }
      ws.send(message);
    });
  });
  await page.route(urlGlob, async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    const response = await route.fetch();
    let body = await response.text();
    if (response.status() === 201) {
      seen.answers++;
      body = loopbackOnly(body, seen.stripped);
    }
    await route.fulfill({ response, body });
  });
  return seen;
}
