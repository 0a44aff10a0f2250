#!/usr/bin/env python3
"""Independent consumer of the GStreamer webrtcsink signalling protocol (aiortc + PyAV).

    channel_client.py WS_URL CHANNEL [--frames 30] [--within 15] [--expect-size WxH]
                      [--expect-audio] [--token T] [--offer]

Connects to the signalling service at WS_URL (onair-signal, onaird's built-in service, or
GStreamer's gst-webrtc-signalling-server), lists the producers, picks the one whose
meta.channel is CHANNEL, and starts a session with it the way gstwebrtc-api does: the producer
offers, this client answers (with --offer it sends its own offer in startSession instead, the
way webrtcsrc does). Then it decodes and checks what arrives like whep_client.py, ends the
session with endSession and exits 0 when everything passed.
"""
import argparse
import asyncio
import json
import re
import sys

import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from whep_client import Failed, Receiver, loopback_only, summary, video_codec


async def recv(ws, timeout=10):
    try:
        return json.loads(await asyncio.wait_for(ws.recv(), timeout))
    except asyncio.TimeoutError:
        raise Failed(f"no message from the service within {timeout} s") from None


async def find_producer(ws, channel):
    await ws.send(json.dumps({"type": "list"}))
    while True:
        msg = await recv(ws)
        if msg["type"] == "list":
            for producer in msg["producers"]:
                if (producer.get("meta") or {}).get("channel") == channel:
                    return producer["id"]
            names = [(p.get("meta") or {}).get("channel") for p in msg["producers"]]
            raise Failed(f"channel {channel!r} is not live (producers' channels: {names})")
        if msg["type"] == "error":
            raise Failed(f"list: {msg['details']}")


async def consume(args):
    res = {"viewer": 1, "errors": [], "warnings": [], "since": "startSession"}
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = Receiver(pc, args)
    loop = asyncio.get_running_loop()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    session = None
    try:
        async with websockets.connect(args.ws_url, additional_headers=headers) as ws:
            welcome = await recv(ws)
            if welcome["type"] != "welcome":
                raise Failed(f"expected welcome, got {welcome}")
            producer = await find_producer(ws, args.channel)
            t0 = loop.time()
            start = {"type": "startSession", "peerId": producer}
            if args.offer:
                pc.addTransceiver("video", direction="recvonly")
                pc.addTransceiver("audio", direction="recvonly")
                await pc.setLocalDescription(await pc.createOffer())
                start["offer"] = pc.localDescription.sdp
            await ws.send(json.dumps(start))
            while pc.remoteDescription is None:
                msg = await recv(ws)
                if msg["type"] == "sessionStarted":
                    session = msg["sessionId"]
                elif msg["type"] == "peer" and msg.get("sessionId") == session:
                    if "sdp" in msg:
                        sdp = loopback_only(msg["sdp"]["sdp"], res)
                        res["codec"] = video_codec(sdp)
                        kind = msg["sdp"]["type"]
                        await pc.setRemoteDescription(RTCSessionDescription(sdp, kind))
                        if kind == "offer":
                            await pc.setLocalDescription(await pc.createAnswer())
                            await ws.send(json.dumps({
                                "type": "peer", "sessionId": session,
                                "sdp": {"type": "answer", "sdp": pc.localDescription.sdp}}))
                    elif msg.get("ice", {}).get("candidate"):
                        res["warnings"].append("the producer trickles candidates; only SDP ones are used")
                elif msg["type"] == "error":
                    raise Failed(f"startSession: {msg['details']}")
                elif msg["type"] == "endSession":
                    raise Failed("the producer ended the session before negotiating")
            # Keep reading (pings, a late endSession) while the media is judged.
            reader = asyncio.ensure_future(drain(ws, res))
            await receiver.judge(res, t0)
            reader.cancel()
            await ws.send(json.dumps({"type": "endSession", "sessionId": session}))
            res["left"] = "endSession"
    except Failed as e:
        res["errors"].append(str(e))
    except Exception as e:  # a bug here or in aiortc: still report
        res["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        await receiver.close()
    return res


async def drain(ws, res):
    async for text in ws:
        msg = json.loads(text)
        if msg.get("type") == "endSession":
            res["warnings"].append("the producer ended the session early")


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ws_url", help="e.g. ws://127.0.0.1:8443/ws")
    ap.add_argument("channel", help="the camera's device.channel")
    ap.add_argument("--frames", type=int, default=30, help="video frames to decode (default 30)")
    ap.add_argument("--within", type=float, default=15, help="seconds from startSession (default 15)")
    ap.add_argument("--expect-size", metavar="WxH", help="e.g. 1280x720")
    ap.add_argument("--expect-audio", action="store_true", help="fail unless Opus frames are decoded")
    ap.add_argument("--assume-matrix", choices=["bt709", "bt601"], default="bt709")
    ap.add_argument("--token", help="viewer token (sent as Authorization: Bearer)")
    ap.add_argument("--offer", action="store_true", help="send our offer in startSession")
    args = ap.parse_args()
    if args.expect_size and not re.fullmatch(r"\d+x\d+", args.expect_size):
        ap.error("--expect-size wants WxH, e.g. 1280x720")
    res = await consume(args)
    print(summary(res))
    print(f"{'FAIL' if res['errors'] else 'OK'}: channel {args.channel!r} via {args.ws_url}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
