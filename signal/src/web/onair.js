// onair.js — watch an onair camera's channel in a browser. An ES module, no build step:
//
//   import { OnAirViewer } from 'https://signal.example.com/onair.js';
//   const viewer = new OnAirViewer({
//     url: 'https://signal.example.com',   // onair-signal or an onaird (default: this page's origin)
//     token: '…',                          // viewer token, if the service wants one
//     iceServers: [{ urls: 'stun:…' }],    // default: the service's GET /api/ice-servers
//                                          // (an onaird's webrtc.ice_servers), else none
//     video: document.querySelector('video'),
//     listener: {
//       onInit() {},                // connected to the service
//       onJoin({ channel }) {},     // media flows
//       onClose({ reason }) {},     // the session ended (the viewer rejoins when the channel is back)
//       onError(error) {},          // something failed (a message for people)
//       onStat(stat) {},            // once a second, from pc.getStats(): see readStat below
//     },
//   });
//   viewer.join('porch');
//   viewer.close();
//
// It speaks GStreamer's webrtcsink signalling protocol over the service's WebSocket (/ws): it
// finds the producer whose meta.channel is the channel, sends its offer with startSession and
// trickles its ICE candidates. It also listens for producers coming and going, so when a
// camera reconnects (or the service restarts) the viewer joins again by itself.

const BACKOFF_MAX_S = 30;

// What one getStats() report says about the video, given the counters `prev` read from the
// one before (null at first): rates are over the time between the two. Returns
// { counters, stat }, or null before video arrives. The stat:
//   framesDecoded, fps, kbps (video received), width, height,
//   rttMs        round trip of the ICE candidate pair in use (else from remote-outbound-rtp),
//                null while not measured,
//   lossPercent  video packets lost of all sent so far (packetsLost / (received + lost)),
//   jitterBufferMs  mean time a frame waited in the jitter buffer since the last report,
//                   null without frames in between.
export function readStat(report, prev) {
  const video = [...report.values()].find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
  if (!video) return null;
  const counters = {
    at: video.timestamp, bytes: video.bytesReceived ?? 0, frames: video.framesDecoded ?? 0,
    waited: video.jitterBufferDelay ?? 0, emitted: video.jitterBufferEmittedCount ?? 0,
  };
  const delta = (key) => counters[key] - (prev?.[key] ?? 0);
  const secs = prev ? delta('at') / 1000 : 0;
  const rate = (key) => (secs > 0 ? delta(key) / secs : 0);
  const received = video.packetsReceived ?? 0, lost = Math.max(0, video.packetsLost ?? 0);
  const rtt = roundTrip(report);
  const stat = {
    framesDecoded: counters.frames,
    fps: video.framesPerSecond ?? rate('frames'),
    kbps: Math.round((rate('bytes') * 8) / 1000),
    width: video.frameWidth ?? 0, height: video.frameHeight ?? 0,
    rttMs: rtt == null ? null : rtt * 1000,
    lossPercent: received + lost > 0 ? (100 * lost) / (received + lost) : 0,
    jitterBufferMs: delta('emitted') > 0 ? (1000 * delta('waited')) / delta('emitted') : null,
  };
  return { counters, stat };
}

// Seconds: the selected candidate pair's current round trip (STUN consent checks), else the
// one remote-outbound-rtp derives from the sender's reports; null if neither has one.
function roundTrip(report) {
  const all = [...report.values()];
  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const pair = transport
    ? report.get(transport.selectedCandidatePairId)
    : all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
  if (typeof pair?.currentRoundTripTime === 'number') return pair.currentRoundTripTime;
  const remote = all.find((s) => s.type === 'remote-outbound-rtp' && typeof s.roundTripTime === 'number');
  return remote?.roundTripTime ?? null;
}

export class OnAirViewer {
  constructor({ url = location.origin, token = null, video = null, listener = {}, iceServers = null } = {}) {
    this.url = url.replace(/\/+$/, '');
    this.token = token;
    this.iceServers = iceServers;
    this.video = video;
    this.listener = listener;
    /** 'idle' | 'connecting' | 'waiting' (for the channel) | 'joining' | 'live' | 'closed' */
    this.state = 'idle';
    this.channel = null;
    this.pc = null;
    this.session = null;
    this.ws = null;
    this.failures = 0;
    this.timers = new Set();
    this.statTimer = null;
  }

  /** Joins `channel` now, and again whenever it comes back, until close(). */
  join(channel) {
    this.channel = channel;
    this.closed = false;
    this.#connect();
  }

  /** Leaves the channel and disconnects. */
  close() {
    this.closed = true;
    this.#endSession('closed');
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.ws) this.ws.close();
    this.ws = null;
    this.#setState('closed');
  }

  #call(name, arg) {
    try { this.listener[name]?.(arg); } catch (e) { console.error(`onair.js listener ${name}:`, e); }
  }

  #setState(state) { this.state = state; }

  #later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
  }

  #retry(why) {
    if (this.closed) return;
    const delay = Math.min(BACKOFF_MAX_S, 2 ** this.failures++) * (0.8 + Math.random() * 0.2);
    this.#call('onError', `${why}; retrying in ${Math.round(delay)} s`);
    this.#later(() => this.#connect(), delay * 1000);
  }

  #send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  #connect() {
    if (this.closed) return;
    if (this.ws) this.ws.close();
    const ws = new URL(`${this.url}/ws`, location.href);
    ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.token) ws.searchParams.set('token', this.token);
    this.#setState('connecting');
    const socket = (this.ws = new WebSocket(ws));
    socket.onmessage = (e) => { if (socket === this.ws) this.#onMessage(JSON.parse(e.data)); };
    socket.onclose = () => {
      if (socket !== this.ws || this.closed) return;
      this.#endSession('the signalling service went away');
      this.#retry('lost the signalling service');
    };
  }

  #onMessage(msg) {
    switch (msg.type) {
      case 'welcome':
        this.#call('onInit');
        // Listen for producers coming and going, and look for the channel now.
        this.#send({ type: 'setPeerStatus', roles: ['listener'], meta: null });
        this.#send({ type: 'list' });
        break;
      case 'list': {
        const producer = msg.producers.find((p) => p.meta?.channel === this.channel);
        if (producer) this.#start(producer.id);
        else { this.#setState('waiting'); this.#call('onError', `channel "${this.channel}" is not live; waiting for it`); }
        break;
      }
      case 'peerStatusChanged':
        if (msg.meta?.channel === this.channel && msg.roles.includes('producer') && !this.pc) this.#start(msg.peerId);
        break;
      case 'sessionStarted':
        this.session = msg.sessionId;
        for (const m of this.pending ?? []) this.#send({ ...m, sessionId: msg.sessionId });
        this.pending = null;
        break;
      case 'peer':
        if (msg.sessionId !== this.session || !this.pc) break;
        if (msg.sdp?.type === 'answer') this.pc.setRemoteDescription(msg.sdp).catch((e) => this.#fail(`bad answer: ${e.message}`));
        else if (msg.ice?.candidate) this.pc.addIceCandidate({ candidate: msg.ice.candidate, sdpMLineIndex: msg.ice.sdpMLineIndex }).catch(() => {});
        break;
      case 'endSession':
        if (msg.sessionId === this.session) {
          this.#endSession('ended by the camera');
          this.#setState('waiting');
          // Rejoin if it is still there (after a backoff, in case it keeps ending sessions);
          // otherwise peerStatusChanged brings it back.
          const delay = Math.min(BACKOFF_MAX_S, 2 ** this.failures++) * 1000;
          this.#later(() => this.#send({ type: 'list' }), delay);
        }
        break;
      case 'error':
        this.#call('onError', msg.details);
        if (this.state === 'joining' && !this.session) this.#fail(msg.details);
        break;
    }
  }

  // The STUN/TURN servers to use: those given, else the service's (an onaird answers
  // /api/ice-servers with its webrtc.ice_servers; other services have none to give).
  async #iceServers() {
    if (this.iceServers) return this.iceServers;
    const url = new URL(`${this.url}/api/ice-servers`, location.href);
    if (this.token) url.searchParams.set('token', this.token);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(3000) });
      const servers = response.ok ? await response.json() : [];
      return Array.isArray(servers) ? servers : [];
    } catch {
      return [];
    }
  }

  async #start(producerId) {
    if (this.pc || this.starting) return;
    this.starting = true;
    const iceServers = await this.#iceServers();
    this.starting = false;
    if (this.pc || this.closed) return;
    this.#setState('joining');
    const pc = (this.pc = new RTCPeerConnection({ iceServers }));
    this.pending = [];
    const stream = new MediaStream();
    if (this.video) this.video.srcObject = stream;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.ontrack = ({ track }) => { stream.addTrack(track); this.video?.play().catch(() => {}); };
    pc.onicecandidate = ({ candidate }) => {
      if (!candidate?.candidate) return;
      const ice = { type: 'peer', ice: { candidate: candidate.candidate, sdpMLineIndex: candidate.sdpMLineIndex ?? 0 } };
      if (this.session) this.#send({ ...ice, sessionId: this.session });
      else this.pending?.push(ice);
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === 'connected') {
        this.failures = 0;
        this.#setState('live');
        this.#call('onJoin', { channel: this.channel });
        this.#startStats();
      } else if (pc.connectionState === 'failed') {
        this.#fail('the media connection failed');
      }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      this.#send({ type: 'startSession', peerId: producerId, offer: pc.localDescription.sdp });
    } catch (e) {
      this.#fail(e.message || String(e));
    }
  }

  #fail(why) {
    this.#endSession(why);
    this.#retry(why);
  }

  #endSession(reason) {
    if (this.session) this.#send({ type: 'endSession', sessionId: this.session });
    if (this.pc) {
      this.pc.close();
      this.pc = null;
      this.#call('onClose', { reason });
    }
    this.session = null;
    this.pending = null;
    clearInterval(this.statTimer);
  }

  #startStats() {
    clearInterval(this.statTimer);
    let counters = null;
    this.statTimer = setInterval(async () => {
      const pc = this.pc;
      if (!pc) return;
      const read = readStat(await pc.getStats(), counters);
      if (!read || pc !== this.pc) return;
      counters = read.counters;
      this.#call('onStat', read.stat);
    }, 1000);
  }
}
