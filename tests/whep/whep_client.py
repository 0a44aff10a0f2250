#!/usr/bin/env python3
"""Independent WHEP (draft-ietf-wish-whep) test client for onaird, built on aiortc + PyAV.

    whep_client.py URL [--frames 60] [--within 5] [--expect-size 1280x720] [--expect-audio]
                       [--viewers N] [--joins N [--join-gap 1]] [--watch S] [--relay HOST:PORT]
                       [--glass WxH [--glass-after S]] [--json]

URL is the daemon (http://127.0.0.1:18080, meaning /whep) or the WHEP endpoint itself. Each
viewer POSTs a recvonly video+audio offer carrying all its candidates, checks for 201 Created +
Location + an application/sdp answer, decodes video until --frames frames (or fails after
--within seconds from the POST), checks the size, counts decoded Opus frames, samples the 75%
colour bars (top 2/3 of the picture, 8 equal bars, sampled at y = height/3, ±24 per channel),
then DELETEs the session and expects 200 or 204. Exits 0 when every viewer passed, 1 otherwise.
With --joins N the viewers join N times, one round after the other (--join-gap seconds
apart), and the median time from POST to the first decoded frame is reported (the benchmark's
time to first frame, docs/PERFORMANCE.md). With --watch S each viewer decodes for S seconds
from the POST whatever it gets, then needs --frames frames in all; the pictures of each size
are counted (a viewer moved between quality layers sees two). With --relay HOST:PORT the
answer's candidates are replaced by one at HOST:PORT, so the viewer reaches the camera only
through that relay (the bad-link harness, tests/src/link.rs). With --glass WxH the stamp of
onair's test pattern (drawn at WxH; stamp.py) is read off every decoded picture and the
glass-to-glass figures (p50/p95/max after the first --glass-after seconds) are reported.
"""
import argparse
import array
import asyncio
import http.client
import ipaddress
import json
import logging
import math
import re
import statistics
import sys
import time
from urllib.parse import urljoin, urlsplit

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

import stamp

# --- ICE stays on loopback ------------------------------------------------------------------
# aioice gathers a host candidate on every address of every interface (via ifaddr) and
# deliberately leaves out 127.0.0.1 and ::1; the tests need the opposite, so the gatherer is
# given 127.0.0.1 alone. (aiortc looks the function up in aioice.ice at gathering time, so
# replacing the module attribute is enough; aioice is pinned in requirements.txt.) STUN/TURN
# are off by passing iceServers=[] (aiortc's default is stun.l.google.com), and the answer's
# candidates that are not on loopback, including mDNS ".local" names that aioice would try to
# resolve by multicast, are removed before they reach aioice.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []

BARS = [("white", (191, 191, 191)), ("yellow", (191, 191, 0)), ("cyan", (0, 191, 191)),
        ("green", (0, 191, 0)), ("magenta", (191, 0, 191)), ("red", (191, 0, 0)),
        ("blue", (0, 0, 191)), ("black", (0, 0, 0))]
TOLERANCE = 24
# FFmpeg AVColorSpace values from the H.264 VUI -> swscale matrix names.
MATRICES = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
UNSPECIFIED = 2


class Failed(Exception):
    pass


def is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keep_loopback_candidates(sdp):
    """Returns (sdp without non-loopback a=candidate lines, kept, dropped)."""
    lines, kept, dropped = [], [], []
    for line in sdp.splitlines():
        m = re.match(r"a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", line)
        if m:
            (kept if is_loopback(m.group(1)) else dropped).append(line[2:])
            if not is_loopback(m.group(1)):
                continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n", kept, dropped


async def request(method, url, body=None, headers=None, timeout=10):
    """One HTTP request (in a thread); returns (status, headers as dict with lower-case keys, body)."""
    def run():
        u = urlsplit(url)
        conn = (http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection)(
            u.hostname, u.port, timeout=timeout)
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


def video_codec(sdp):
    """'H264 profile-level-id=42e01f;…' for the first video payload type of an SDP answer."""
    m = re.search(r"^m=video \d+ \S+ (\d+)", sdp, re.M)
    if not m:
        return "no video m-line"
    pt = m.group(1)
    name = re.search(rf"^a=rtpmap:{pt} ([^/\s]+)", sdp, re.M)
    fmtp = re.search(rf"^a=fmtp:{pt} (\S+)", sdp, re.M)
    return (name.group(1) if name else f"pt {pt}") + (f" {fmtp.group(1)}" if fmtp else "")


def sample_bars(frame, codec, assume):
    """Converts a decoded frame to RGB the way a browser would and averages a 5x5 block at the
    centre of each bar at y = height/3. Returns (colours, description of the matrix used)."""
    cs, full = int(frame.colorspace), int(frame.color_range) == 2
    if cs == UNSPECIFIED and not codec.upper().startswith("H264"):
        matrix, how = "ITU601", f"{codec.split()[0]}: BT.601"  # VP8 is BT.601 by definition
    elif cs == UNSPECIFIED:
        # No colour description in the H.264 VUI: Chrome assumes BT.709 (FFmpeg would say BT.601).
        matrix, how = {"bt709": "ITU709", "bt601": "ITU601"}[assume], f"untagged, assumed {assume}"
    else:
        matrix, how = MATRICES.get(cs, "ITU601"), f"VUI matrix {cs}"
    rgb = frame.reformat(format="rgb24", src_colorspace=matrix,
                         src_color_range="JPEG" if full else "MPEG", dst_color_range="JPEG")
    plane = rgb.planes[0]
    data, stride, w, h = bytes(plane), plane.line_size, rgb.width, rgb.height
    y = h // 3
    colours = []
    for i in range(8):
        x = (2 * i + 1) * w // 16
        acc = [0, 0, 0]
        for yy in range(y - 2, y + 3):
            for xx in range(x - 2, x + 3):
                o = yy * stride + xx * 3
                for c in range(3):
                    acc[c] += data[o + c]
        colours.append(tuple(round(v / 25) for v in acc))
    return colours, how + (", full range" if full else "")


class Receiver:
    """Decodes what a receive-only RTCPeerConnection gets and judges it against the args."""

    def __init__(self, pc, args):
        self.pc, self.args = pc, args
        self.loop = asyncio.get_running_loop()
        self.enough_video, self.failed = asyncio.Event(), asyncio.Event()
        self.video = {"frames": 0, "sizes": set(), "by_size": {}, "first": None, "last": None,
                      "glass": []}
        self.audio = {"frames": 0, "samples": 0, "sum_sq": 0, "rate": None}
        self.tasks = []
        pc.on("track", lambda track: self.tasks.append(asyncio.ensure_future(self.consume(track))))
        pc.on("connectionstatechange", lambda: pc.connectionState == "failed" and self.failed.set())

    async def consume(self, track):
        video, audio = self.video, self.audio
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    video["frames"] += 1
                    size = f"{frame.width}x{frame.height}"
                    video["sizes"].add(size)
                    video["by_size"][size] = video["by_size"].get(size, 0) + 1
                    video["first"] = video["first"] or self.loop.time()
                    video["last"] = frame
                    if getattr(self.args, "glass", None):
                        self.glass(frame)
                    if video["frames"] >= self.args.frames:
                        self.enough_video.set()
                else:
                    audio["frames"] += 1
                    audio["rate"] = frame.sample_rate
                    if frame.format.name == "s16":
                        pcm = array.array("h", bytes(frame.planes[0]))
                        audio["samples"] += len(pcm)
                        audio["sum_sq"] += sum(s * s for s in pcm)
        except MediaStreamError:
            pass

    def glass(self, frame):
        """Glass-to-glass of a decoded picture: now minus the wall clock in its stamp (read at
        the size --glass names: the top layer's), kept with the time it was read."""
        now = time.time() * 1000
        plane = frame.planes[0]
        read = stamp.read(memoryview(plane), plane.line_size, frame.width, frame.height,
                          self.args.glass)
        if read:
            self.video["glass"].append((self.loop.time(), stamp.latency_ms(read[1], now)))

    async def judge(self, res, t0):
        """Waits for --frames frames until --within s after t0, then checks them into res."""
        args, video, audio = self.args, self.video, self.audio
        # channel_client.py shares this class; its arguments have no --watch.
        watch = getattr(args, "watch", None)
        waits = [asyncio.ensure_future(e.wait()) for e in ([] if watch else [self.enough_video]) + [self.failed]]
        remaining = (watch or args.within) - (self.loop.time() - t0)
        await asyncio.wait(waits, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        res["frames"] = video["frames"]
        res["frames_by_size"] = dict(video["by_size"])
        if getattr(args, "glass", None):
            res["glass"] = glass_figures(video["glass"], video["first"], args.glass_after)
        if video["last"] is not None:
            res["last_size"] = f"{video['last'].width}x{video['last'].height}"
        if video["first"]:
            res["first_frame_s"] = round(video["first"] - t0, 3)
        if not self.enough_video.is_set():
            why = "ICE/DTLS connection failed" if self.failed.is_set() else f"state {self.pc.connectionState}"
            raise Failed(f"{video['frames']} of {args.frames} video frames within {watch or args.within} s ({why})")

        # Checks on what was received; report every problem, not just the first.
        res["size"] = ", ".join(sorted(video["sizes"]))
        if args.expect_size and video["sizes"] != {args.expect_size}:
            res["errors"].append(f"frame size {res['size']}, want {args.expect_size}")
        colours, res["matrix"] = sample_bars(video["last"], res["codec"], args.assume_matrix)
        res["bars"] = {name: rgb for (name, _), rgb in zip(BARS, colours)}
        wrong = [f"{name} rgb{got} want rgb{want}" for (name, want), got in zip(BARS, colours)
                 if any(abs(g - e) > TOLERANCE for g, e in zip(got, want))]
        if wrong:
            res["errors"].append(f"bar colours off by more than ±{TOLERANCE} ({res['matrix']}): " + ", ".join(wrong))
        if int(video["last"].colorspace) == UNSPECIFIED and res["codec"].upper().startswith("H264"):
            res["warnings"].append("the H.264 VUI has no colour description: browsers disagree on the matrix")
        res["audio_frames"] = audio["frames"]
        if audio["samples"]:
            rms = math.sqrt(audio["sum_sq"] / audio["samples"])
            res["audio_dbfs"] = round(20 * math.log10(rms / 32768), 1) if rms else None
        if args.expect_audio and not audio["frames"]:
            res["errors"].append("no audio frames decoded (--expect-audio)")

    async def close(self):
        for t in self.tasks:
            t.cancel()
        await self.pc.close()


def through(sdp, relay):
    """The SDP with its first UDP candidate moved to relay (HOST:PORT) and no other."""
    host, port = relay.rsplit(":", 1)
    lines, placed = [], False
    for line in sdp.splitlines():
        m = re.match(r"a=candidate:(\S+) (\d+) (\S+) (\d+) \S+ \d+ typ", line)
        if m:
            if placed or m.group(3).lower() != "udp":
                continue
            placed = True
            line = f"a=candidate:{m.group(1)} {m.group(2)} udp {m.group(4)} {host} {port} typ host"
        lines.append(line)
    if not placed:
        raise Failed("the answer has no UDP candidate to put the relay in place of")
    return "\r\n".join(lines) + "\r\n"


def loopback_only(sdp, res):
    """The SDP with only its loopback candidates (noting dropped ones); fails without any."""
    kept_sdp, kept, dropped = keep_loopback_candidates(sdp)
    if dropped:
        res["warnings"].append(f"ignored {len(dropped)} non-loopback candidate(s): {'; '.join(dropped)}")
    if not kept:
        raise Failed("the SDP has no loopback ICE candidates (all of them must be in it)")
    return kept_sdp


async def viewer(n, whep_url, args):
    """One viewer; returns a result dict (result['errors'] empty when it passed)."""
    res = {"viewer": n, "errors": [], "warnings": []}
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    receiver = Receiver(pc, args)
    loop = asyncio.get_running_loop()
    session = None
    auth = {}
    try:
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers every candidate here
        t_post = loop.time()
        auth = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        offer = pc.localDescription.sdp
        if args.relay:
            # The camera must not reach the viewer directly either: it learns the relay's
            # address from the checks that come through it.
            offer = "".join(line for line in offer.splitlines(True) if not line.startswith("a=candidate:"))
        status, headers, body = await request("POST", whep_url, offer,
                                              {"Content-Type": "application/sdp", **auth})
        location = headers.get("location")
        if location:
            session = urljoin(whep_url, location)
        if status != 201:
            raise Failed(f"POST {whep_url}: HTTP {status}, want 201: {body.strip()[:300]}")
        if not location:
            raise Failed("201 without a Location header")
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            raise Failed(f"answer Content-Type is {ctype or 'missing'!r}, want application/sdp")
        answer = loopback_only(body, res)
        if args.relay:
            answer = through(answer, args.relay)
        res["codec"] = video_codec(answer)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await receiver.judge(res, t_post)
    except Failed as e:
        res["errors"].append(str(e))
    except Exception as e:  # a bug here or in aiortc: still DELETE, still report
        res["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        if session:
            try:
                status, _, body = await request("DELETE", session, headers=auth)
                res["delete"] = status
                if status not in (200, 204):
                    res["errors"].append(f"DELETE {session}: HTTP {status}, want 200 or 204: {body.strip()[:200]}")
            except Failed as e:
                res["errors"].append(str(e))
        await receiver.close()
    return res


def summary(r):
    head = f"viewer {r['viewer']}: {'FAIL' if r['errors'] else 'ok'}"
    parts = []
    if "size" in r:
        parts.append(f"{r['size']} {r.get('codec', '')}".strip())
    if "frames" in r:
        since = r.get("since", "POST")
        parts.append(f"{r['frames']} frames" + (f", first {r['first_frame_s']} s after {since}" if "first_frame_s" in r else ""))
    if "audio_frames" in r:
        parts.append(f"{r['audio_frames']} audio frames" + (f" ({r['audio_dbfs']} dBFS)" if r.get("audio_dbfs") is not None else ""))
    if "bars" in r:
        parts.append("bars " + " ".join(f"{k}({','.join(map(str, v))})" for k, v in r["bars"].items())
                     + f" [{r['matrix']}]")
    if r.get("glass", {}).get("measured"):
        g = r["glass"]
        parts.append(f"glass-to-glass p50 {g['p50']} ms, p95 {g['p95']} ms, max {g['max']} ms ({g['measured']} pictures)")
    if "delete" in r:
        parts.append(f"DELETE {r['delete']}")
    if "left" in r:
        parts.append(f"left with {r['left']}")
    lines = [head + (": " + "; ".join(parts) if parts else "")]
    lines += [f"  warning: {w}" for w in r["warnings"]]
    lines += [f"  error: {e}" for e in r["errors"]]
    return "\n".join(lines)


def glass_figures(samples, first, after):
    """p50/p95/max of the glass-to-glass samples taken `after` seconds past the first picture,
    how many, and every 30th sample (seconds since the first picture, ms)."""
    if not samples or first is None:
        return {"measured": 0}
    later = sorted(ms for at, ms in samples if at - first >= after)
    figures = {"measured": len(later), "timeline": [(round(at - first, 1), ms) for at, ms in samples[::30]]}
    if later:
        figures.update(p50=later[len(later) // 2], p95=later[min(len(later) - 1, len(later) * 95 // 100)],
                       max=later[-1])
    return figures


def first_frame_ms(results):
    """Median, min and max of POST -> first decoded frame over the viewers that got one."""
    times = sorted(r["first_frame_s"] * 1000 for r in results if "first_frame_s" in r)
    if not times:
        return None
    return {"median": round(statistics.median(times), 1), "min": round(times[0], 1),
            "max": round(times[-1], 1), "n": len(times)}


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="daemon base URL (then /whep is used) or the WHEP endpoint URL")
    ap.add_argument("--frames", type=int, default=60, help="video frames to decode (default 60)")
    ap.add_argument("--within", type=float, default=5, help="seconds from POST to --frames frames (default 5)")
    ap.add_argument("--expect-size", metavar="WxH", help="e.g. 1280x720")
    ap.add_argument("--expect-audio", action="store_true", help="fail unless Opus frames are decoded")
    ap.add_argument("--viewers", type=int, default=1, help="concurrent viewers, all must pass (default 1)")
    ap.add_argument("--assume-matrix", choices=["bt709", "bt601"], default="bt709",
                    help="colour matrix for video without a VUI colour description (default bt709, as Chrome)")
    ap.add_argument("--token", help="viewer token, sent as Authorization: Bearer (RFC 9725) on POST and DELETE")
    ap.add_argument("--joins", type=int, default=1,
                    help="rounds of --viewers viewers, one after the other; reports the median time to first frame")
    ap.add_argument("--join-gap", type=float, default=1.0, help="seconds between rounds (default 1)")
    ap.add_argument("--watch", type=float, metavar="S",
                    help="decode for S seconds from the POST (not until --frames), then need --frames in all")
    ap.add_argument("--relay", metavar="HOST:PORT",
                    help="reach the camera only through this UDP relay (its answer's candidates replaced)")
    ap.add_argument("--glass", metavar="WxH",
                    help="read the test pattern's stamp (drawn at WxH, the top layer's size) off every "
                         "decoded picture: glass-to-glass p50/p95/max")
    ap.add_argument("--glass-after", type=float, default=2.0, metavar="S",
                    help="glass-to-glass figures leave out the first S seconds after the first picture (default 2)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead")
    ap.add_argument("-v", "--verbose", action="store_true", help="aiortc/aioice debug logs on stderr")
    args = ap.parse_args()
    if args.expect_size and not re.fullmatch(r"\d+x\d+", args.expect_size):
        ap.error("--expect-size wants WxH, e.g. 1280x720")
    if args.glass:
        if not re.fullmatch(r"\d+x\d+", args.glass):
            ap.error("--glass wants WxH, e.g. 1280x720")
        args.glass = tuple(int(v) for v in args.glass.split("x"))
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG)
    whep_url = args.url if urlsplit(args.url).path not in ("", "/") else urljoin(args.url, "/whep")

    results = []
    for join in range(args.joins):
        if join:
            await asyncio.sleep(args.join_gap)
        results += await asyncio.gather(*(viewer(join * args.viewers + i + 1, whep_url, args)
                                          for i in range(args.viewers)))
    failed = [r for r in results if r["errors"]]
    first = first_frame_ms(results)
    if args.json:
        print(json.dumps({"url": whep_url, "ok": not failed, "first_frame_ms": first, "viewers": results},
                         indent=2, default=list))
    else:
        for r in results:
            print(summary(r))
        if first and args.joins > 1:
            print(f"POST -> first decoded frame: median {first['median']} ms "
                  f"(min {first['min']}, max {first['max']}, n={first['n']})")
        print(f"{'FAIL' if failed else 'OK'}: {len(results) - len(failed)}/{len(results)} viewer(s) passed ({whep_url})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
