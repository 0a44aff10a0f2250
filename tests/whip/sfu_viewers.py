#!/usr/bin/env python3
"""N viewers at once watching a Janus VideoRoom through janus_whip.py's /watch, with aiortc.

    sfu_viewers.py [--front http://127.0.0.1:8090] [--room 1234] [--viewers 10] [--seconds 6]
                   [--min-frames 1] [--ice-address IP] [--timeout S]

Each viewer POSTs /watch/<room> (the front joins Janus as a subscriber to the room's publisher
and returns Janus's offer), sets it, answers (aiortc gathers every candidate first), PATCHes the
answer, then decodes for --seconds: video frames (and their size) and audio frames (and their
peak level), and on past them, for at most --timeout in all, until it has --min-frames (a
loaded machine starts slower). Then it DELETEs its resource. Prints one JSON object on stdout:

    {"viewers": [{"video_frames": .., "width": .., "height": .., "audio_frames": ..,
                  "audio_peak_dbfs": .., "errors": []}, ...], "ok": true}

and exits 0 when every viewer decoded at least --min-frames video frames without an error,
1 otherwise (the reasons also on stderr). Every wait is bounded: HTTP requests 15 s each, the
whole run --timeout seconds (default --seconds + 60).

ICE: Janus gathers only on the address of the SFU's namespace (10.200.0.1 in tests/src/sfu.rs)
and aioice never gathers on loopback, so the viewers gather on the addresses Janus's offer
names (they are local when the viewers run inside the namespace), or on --ice-address.
"""
import argparse
import array
import asyncio
import http.client
import ipaddress
import json
import math
import re
import sys
import time
from urllib.parse import urljoin, urlsplit

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

HTTP_TIMEOUT = 15.0
# The IPv4 addresses aioice gathers on; set from Janus's offer (or --ice-address) before the
# first answer is made. (aiortc looks the function up in aioice.ice at gathering time.)
ICE_ADDRESSES = []
_aioice_default = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4, use_ipv6):
    if ICE_ADDRESSES:
        return list(ICE_ADDRESSES) if use_ipv4 else []
    return _aioice_default(use_ipv4=use_ipv4, use_ipv6=use_ipv6)


aioice.ice.get_host_addresses = _host_addresses


class Failed(Exception):
    pass


async def request(method, url, body=None, headers=None):
    """One HTTP request in a thread; returns (status, headers with lower-case keys, body text)."""
    def run():
        u = urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request(method, u.path + (f"?{u.query}" if u.query else ""),
                         body=body.encode() if isinstance(body, str) else body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace")
        finally:
            conn.close()
    try:
        return await asyncio.to_thread(run)
    except OSError as e:
        raise Failed(f"{method} {url}: {e}") from None


def offer_addresses(sdp):
    """The IPv4 host addresses of the offer's candidates."""
    out = []
    for m in re.finditer(r"^a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", sdp, re.M | re.I):
        try:
            if ipaddress.ip_address(m.group(1)).version == 4 and m.group(1) not in out:
                out.append(m.group(1))
        except ValueError:
            pass  # an mDNS name: not ours to resolve
    return out


async def viewer(n, args):
    res = {"viewer": n, "video_frames": 0, "width": None, "height": None, "audio_frames": 0,
           "audio_peak_dbfs": None, "errors": []}
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tasks, peak = [], [0]
    resource = None
    t0 = time.monotonic()

    async def consume(track):
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    res["video_frames"] += 1
                    res["width"], res["height"] = frame.width, frame.height
                    if res["video_frames"] == 1:
                        res["first_frame_s"] = round(time.monotonic() - t0, 3)
                else:
                    res["audio_frames"] += 1
                    if frame.format.name == "s16":
                        pcm = array.array("h", bytes(frame.planes[0]))
                        if pcm:
                            peak[0] = max(peak[0], max(pcm), -min(pcm))
        except MediaStreamError:
            pass

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    try:
        watch = f"{args.front.rstrip('/')}/watch/{args.room}"
        status, headers, body = await request("POST", watch)
        if status != 201:
            raise Failed(f"POST {watch}: HTTP {status}: {body.strip()[:300]}")
        if not headers.get("location"):
            raise Failed(f"POST {watch}: 201 without Location")
        resource = urljoin(watch, headers["location"])
        if not ICE_ADDRESSES:
            ICE_ADDRESSES.extend(args.ice_address or offer_addresses(body))
        await pc.setRemoteDescription(RTCSessionDescription(body, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate
        status, _, text = await request("PATCH", resource, pc.localDescription.sdp,
                                        {"Content-Type": "application/sdp"})
        if status not in (200, 204):
            raise Failed(f"PATCH {resource}: HTTP {status}: {text.strip()[:300]}")
        await asyncio.sleep(args.seconds)
        # The run's --timeout bounds this; one viewer that never gets there fails alone.
        while res["video_frames"] < args.min_frames and pc.connectionState not in ("failed", "closed"):
            await asyncio.sleep(0.2)
        res["seconds"] = round(time.monotonic() - t0, 1)
        res["state"] = pc.connectionState
        for stat in (await pc.getStats()).values():
            if stat.type == "inbound-rtp":
                res[f"{stat.kind}_packets"] = stat.packetsReceived
        if res["video_frames"] < args.min_frames:
            raise Failed(f"{res['video_frames']} video frames in {res['seconds']:g} s, want at least "
                         f"{args.min_frames} (connection {pc.connectionState})")
    except Failed as e:
        res["errors"].append(str(e))
    except Exception as e:  # aiortc or a bug: still clean up and report
        res["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        if peak[0]:
            res["audio_peak_dbfs"] = round(20 * math.log10(peak[0] / 32768), 1)
        if resource:
            try:
                status, _, text = await request("DELETE", resource)
                res["delete"] = status
                if status not in (200, 204):
                    res["errors"].append(f"DELETE {resource}: HTTP {status}: {text.strip()[:200]}")
            except Failed as e:
                res["errors"].append(str(e))
        for t in tasks:
            t.cancel()
        await pc.close()
    return res


async def main(args):
    results = await asyncio.gather(*(viewer(i + 1, args) for i in range(args.viewers)))
    ok = not any(r["errors"] for r in results)
    print(json.dumps({"front": args.front, "room": args.room, "seconds": args.seconds,
                      "ok": ok, "viewers": results}))
    for r in results:
        for e in r["errors"]:
            print(f"viewer {r['viewer']}: {e}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--front", default="http://127.0.0.1:8090", help="janus_whip.py's URL")
    ap.add_argument("--room", type=int, default=1234)
    ap.add_argument("--viewers", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=6, help="how long each viewer decodes")
    ap.add_argument("--min-frames", type=int, default=1, help="video frames each viewer must decode")
    ap.add_argument("--ice-address", action="append", metavar="IP",
                    help="gather ICE candidates on this IPv4 address (default: those of Janus's offer)")
    ap.add_argument("--timeout", type=float, help="for the whole run (default --seconds + 60)")
    args = ap.parse_args()
    if args.viewers < 1 or args.seconds < 0:
        ap.error("--viewers must be at least 1 and --seconds not negative")
    limit = args.timeout or args.seconds + 60
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(args), limit)))
    except (asyncio.TimeoutError, TimeoutError):
        print(json.dumps({"front": args.front, "room": args.room, "ok": False,
                          "error": f"not done within {limit:g} s", "viewers": []}))
        print(f"sfu_viewers: not done within {limit:g} s", file=sys.stderr)
        sys.exit(1)
