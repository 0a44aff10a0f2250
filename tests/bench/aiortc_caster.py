#!/usr/bin/env python3
"""A WHEP server built on aiortc that casts onair's stamped test pattern: the latency and
start-up anchor of the side-by-side benchmark (docs/PERFORMANCE.md).

    aiortc_caster.py --pattern target/release/onair-pattern --width 640 --height 480 --fps 30 \
                     --bitrate-kbps 1000 [--listen 127.0.0.1:0] [--token T]

Reads raw I420 pictures from `onair-pattern` (the same pictures and stamp onaird's test-pattern
source makes) and gives every viewer the newest one. Each viewer has its own RTCPeerConnection
and so its own libx264 encoder (aiortc encodes per sender through PyAV): the usual shape of a
Python WebRTC caster, and the point of comparison. Audio is aiortc's silence, Opus-encoded per
viewer too, so that both casters send video and audio.

WHEP: POST /whep with an application/sdp offer -> 201, Location /whep/<id>, the answer;
DELETE /whep/<id> -> 200. Prints "listening on http://HOST:PORT" once it serves. ICE on
127.0.0.1 only.
"""
import argparse
import asyncio
import fractions
import json
import logging
import signal
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aioice.ice
import aiortc.codecs.h264 as h264
import av
from aiortc import (RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription,
                    VideoStreamTrack)
from aiortc.mediastreams import AudioStreamTrack

# ICE on loopback only (as in tests/whep/whep_client.py): aioice leaves 127.0.0.1 out.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []

VIDEO_CLOCK = 90_000
# How long one WHEP POST may take (offer -> answer) before the server gives up with 500.
ANSWER_TIMEOUT_S = 10


def pin_bitrate(kbps):
    """Makes every aiortc H.264 encoder run at `kbps`: aiortc starts at DEFAULT_BITRATE and
    follows the viewer's REMB between MIN_BITRATE and MAX_BITRATE (module globals read at
    use), so setting all three holds it where onaird's fixed bitrate is."""
    h264.DEFAULT_BITRATE = h264.MIN_BITRATE = h264.MAX_BITRATE = kbps * 1000


class Pattern:
    """The newest picture from `onair-pattern`, and a way to wait for the next one."""

    def __init__(self, width, height):
        self.width, self.height = width, height
        self.size = width * height * 3 // 2
        self.picture, self.index = None, -1
        self.changed = asyncio.Condition()

    async def run(self, command):
        """Reads pictures until the pattern process ends (it is paced at its --fps)."""
        proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        try:
            while True:
                data = await proc.stdout.readexactly(self.size)
                async with self.changed:
                    self.picture, self.index = data, self.index + 1
                    self.changed.notify_all()
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()

    async def after(self, index):
        """The first picture newer than `index`: (picture bytes, its index)."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.index > index)
            return self.picture, self.index


def fill(plane, data, width, height):
    """Copies a tightly packed `width` x `height` plane into a PyAV plane (rows may be padded)."""
    if plane.line_size == width:
        plane.update(data)
        return
    view = memoryview(plane)
    for row in range(height):
        view[row * plane.line_size:row * plane.line_size + width] = data[row * width:(row + 1) * width]


class PatternTrack(VideoStreamTrack):
    """One viewer's video: the newest pattern picture each time its encoder asks."""

    def __init__(self, pattern, fps):
        super().__init__()
        self.pattern, self.fps, self.seen = pattern, fps, -1

    async def recv(self):
        data, self.seen = await self.pattern.after(self.seen)
        w, h = self.pattern.width, self.pattern.height
        frame = av.VideoFrame(w, h, "yuv420p")
        luma, chroma = w * h, (w // 2) * (h // 2)
        fill(frame.planes[0], data[:luma], w, h)
        fill(frame.planes[1], data[luma:luma + chroma], w // 2, h // 2)
        fill(frame.planes[2], data[luma + chroma:], w // 2, h // 2)
        # The timestamp follows the picture's own index, so skipped pictures leave a gap.
        frame.pts = self.seen * VIDEO_CLOCK // self.fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class Caster:
    """The viewers' peer connections, by WHEP session id."""

    def __init__(self, pattern, fps):
        self.pattern, self.fps = pattern, fps
        self.sessions = {}

    async def answer(self, offer_sdp):
        """A new viewer: returns (session id, answer SDP)."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = pc.addTransceiver(PatternTrack(self.pattern, self.fps), direction="sendonly")
        # H.264 only: Chromium lists VP8 first, and onaird sends H.264.
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.lower() in ("video/h264", "video/rtx")])
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        session = uuid.uuid4().hex
        self.sessions[session] = pc

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed"):
                await self.close(session)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate
        except Exception:
            await self.close(session)
            raise
        return session, pc.localDescription.sdp

    async def close(self, session):
        """Ends a session; False if there was none."""
        pc = self.sessions.pop(session, None)
        if pc is None:
            return False
        await pc.close()
        return True

    async def close_all(self):
        for session in list(self.sessions):
            await self.close(session)


def handler(caster, loop, token):
    """The WHEP request handler class; requests run on server threads, WebRTC on `loop`."""

    def call(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(ANSWER_TIMEOUT_S)

    class Whep(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, body=b"", headers=()):
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def authorised(self):
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                self.reply(401, b"token required\n")
                return False
            return True

        def do_POST(self):
            if self.path.split("?")[0] != "/whep":
                return self.reply(404)
            if not self.authorised():
                return
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/sdp":
                return self.reply(415, b"want application/sdp\n")
            offer = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            try:
                session, answer = call(caster.answer(offer))
            except Exception as e:  # a bad offer, or aiortc failing: the viewer learns why
                return self.reply(400, f"{type(e).__name__}: {e}\n".encode())
            self.reply(201, answer.encode(), [("Content-Type", "application/sdp"),
                                              ("Location", f"/whep/{session}")])

        def do_DELETE(self):
            if not self.authorised():
                return
            session = self.path.split("?")[0].removeprefix("/whep/")
            self.reply(200 if call(caster.close(session)) else 404)

        def do_GET(self):
            if self.path == "/api/status":
                body = json.dumps({"sessions": len(caster.sessions)}).encode()
                return self.reply(200, body, [("Content-Type", "application/json")])
            self.reply(404)

        def log_message(self, *args):
            pass

    return Whep


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pattern", required=True, help="the onair-pattern binary")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--bitrate-kbps", type=int, default=1000, help="H.264 bitrate (default 1000)")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HTTP address (default 127.0.0.1:0)")
    ap.add_argument("--token", help="require Authorization: Bearer TOKEN on POST and DELETE")
    ap.add_argument("-v", "--verbose", action="store_true", help="aiortc/aioice debug logs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    pin_bitrate(args.bitrate_kbps)

    loop = asyncio.get_running_loop()
    pattern = Pattern(args.width, args.height)
    reader = asyncio.create_task(pattern.run([
        args.pattern, "--width", str(args.width), "--height", str(args.height),
        "--fps", str(args.fps)]))
    await pattern.after(-1)  # serve once pictures flow
    caster = Caster(pattern, args.fps)
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), handler(caster, loop, args.token))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening on http://{host}:{server.server_address[1]} "
          f"({args.width}x{args.height}@{args.fps}, libx264 {args.bitrate_kbps} kb/s per viewer)",
          flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.wait([asyncio.ensure_future(stop.wait()), reader],
                       return_when=asyncio.FIRST_COMPLETED)
    server.shutdown()
    await caster.close_all()
    reader.cancel()
    try:
        await reader
    except (asyncio.CancelledError, asyncio.IncompleteReadError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
