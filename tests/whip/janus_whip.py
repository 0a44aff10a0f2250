#!/usr/bin/env python3
"""A thin WHIP (RFC 9725) front for Janus's VideoRoom plugin, for onaird's WHIP client tests.

    janus_whip.py [--listen 127.0.0.1:8090] [--janus http://127.0.0.1:8088/janus]
                  [--token TOKEN] [--room 1234]

Janus does all the media; this only turns WHIP's HTTP exchanges into Janus HTTP API requests
(a Janus session and a VideoRoom handle per WHIP resource). Python 3.11 standard library only.

Publishing (the camera):
  POST   /whip/<room>        Bearer token, application/sdp offer with all its candidates
                             → 201, the answer, Location /whip/<room>/<id>, ETag, Link (ICE server)
  DELETE /whip/<room>/<id>   Bearer token → 200 (the Janus session destroyed), unknown → 404
  PATCH  /whip/<room>/<id>   405: no trickle ICE and no ICE restart through this front
  POST   /redirect/<room>    307 to /whip/<room> (tests the client's redirect following)
  POST   /busy/<room>        the first time 429 with Retry-After: 3, then 307 to /whip/<room>
                             (tests that the client waits as told)
Watching (viewers watch from Janus, never from the camera; no token):
  POST   /watch/<room>       no body → 201, Janus's offer for the room's publisher, Location
  PATCH  /watch/<room>/<id>  application/sdp answer → 204
  DELETE /watch/<room>/<id>  → 200
  GET    /watch.html?room=N  a page that watches the room (window.stats() for tests)
State:
  GET    /state[?room=N]     JSON: posts, created, deleted, unauthorized, publishers (Janus's
                             listparticipants of the room, [] when none or Janus is down), …

Janus sessions are kept alive by a keepalive every 20 s (so Janus's session_timeout need not
be 0). If Janus restarts, its sessions and rooms are gone: a resource whose session Janus no
longer knows is still deleted with 200, and the next POST creates the room again.
One log line per request goes to stderr.
"""
import argparse
import json
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PLUGIN = "janus.plugin.videoroom"
ANSWER_WITHIN = 10.0  # seconds for Janus's JSEP after a join
KEEPALIVE_EVERY = 20.0
ICE_SERVER_LINK = '<stun:10.200.0.1:3478>; rel="ice-server"'
# Janus VideoRoom error codes that mean "the room is not there".
NO_SUCH_ROOM = 426
ROOM_EXISTS = 427


class JanusDown(Exception):
    """Janus did not answer (connection refused, timeout, not JSON)."""


class JanusError(Exception):
    """Janus (or the VideoRoom plugin) answered with an error."""

    def __init__(self, reason, code=None):
        super().__init__(reason)
        self.code = code


class Janus:
    """A client of Janus's HTTP API (the "janus" requests of the HTTP transport)."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self._next = 0
        self._lock = threading.Lock()

    def _transaction(self):
        with self._lock:
            self._next += 1
            return f"w{self._next}-{secrets.token_hex(3)}"

    def _send(self, url, body=None, timeout=10.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:  # Janus answers its errors with 200; this is odd
            text = e.read().decode("utf-8", "replace")
            if not text.strip().startswith("{"):
                raise JanusDown(f"Janus answered HTTP {e.code} to {url}") from None
        except (OSError, urllib.error.URLError) as e:
            raise JanusDown(f"Janus at {self.base} unreachable: {getattr(e, 'reason', e)}") from None
        try:
            return json.loads(text)
        except ValueError:
            raise JanusDown(f"Janus sent no JSON to {url}: {text[:200]!r}") from None

    def request(self, path, body, timeout=10.0):
        """POSTs a Janus request; returns the reply, which must be success or ack."""
        body = {**body, "transaction": self._transaction()}
        reply = self._send(self.base + path, body, timeout)
        if reply.get("janus") == "error":
            err = reply.get("error", {})
            raise JanusError(f"Janus: {err.get('reason', reply)}", err.get("code"))
        if reply.get("janus") not in ("success", "ack"):
            raise JanusError(f"Janus answered {json.dumps(reply)[:300]}")
        return reply

    def create_session(self):
        return self.request("", {"janus": "create"})["data"]["id"]

    def attach(self, session):
        return self.request(f"/{session}", {"janus": "attach", "plugin": PLUGIN})["data"]["id"]

    def destroy(self, session):
        return self.request(f"/{session}", {"janus": "destroy"}, timeout=5.0)

    def keepalive(self, session):
        return self.request(f"/{session}", {"janus": "keepalive"}, timeout=5.0)

    def sync(self, session, handle, body):
        """A synchronous VideoRoom request (create, exists, listparticipants): its data."""
        reply = self.request(f"/{session}/{handle}", {"janus": "message", "body": body})
        data = reply.get("plugindata", {}).get("data", {})
        if "error" in data or "error_code" in data:
            raise JanusError(f"VideoRoom: {data.get('error', data)}", data.get("error_code"))
        return data

    def message(self, session, handle, body, jsep=None):
        msg = {"janus": "message", "body": body}
        if jsep:
            msg["jsep"] = jsep
        return self.request(f"/{session}/{handle}", msg)

    def wait_jsep(self, session, within=ANSWER_WITHIN):
        """Long-polls the session until an event carries a JSEP; returns (jsep, data).
        Raises TimeoutError after `within` seconds, JanusError on a plugin error event."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._send(f"{self.base}/{session}?maxev=1&rid={int(time.time() * 1000)}",
                                   timeout=max(0.2, left))
            except JanusDown as e:
                if time.monotonic() >= deadline:
                    break
                if "timed out" in str(e):
                    continue
                raise
            events = event if isinstance(event, list) else [event]
            for ev in events:
                if ev.get("janus") == "error":
                    raise JanusError(f"Janus: {ev.get('error', {}).get('reason', ev)}", ev.get("error", {}).get("code"))
                data = ev.get("plugindata", {}).get("data", {})
                if "error" in data or "error_code" in data:
                    raise JanusError(f"VideoRoom: {data.get('error', data)}", data.get("error_code"))
                if ev.get("jsep"):
                    return ev["jsep"], data
        raise TimeoutError(f"Janus sent no JSEP within {within:g} s")


class Resource:
    def __init__(self, kind, room, rid, session, handle):
        self.kind, self.room, self.id = kind, room, rid
        self.session, self.handle = session, handle
        self.etag = f'"{secrets.token_hex(8)}"'
        self.created = time.time()


class State:
    def __init__(self, args):
        self.args = args
        self.janus = Janus(args.janus)
        self.lock = threading.Lock()
        self.resources = {}  # (kind, id) → Resource
        self.posts = 0
        self.created, self.deleted = [], []
        self.unauthorized = 0
        self.busy_posts = []  # when each POST /busy came (time.time())
        self.watch_created, self.watch_deleted = [], []
        self.errors = []  # the reasons of failed POSTs, newest last

    def add(self, res):
        with self.lock:
            self.resources[(res.kind, res.id)] = res
            (self.created if res.kind == "whip" else self.watch_created).append(res.id)

    def remove(self, kind, rid):
        with self.lock:
            res = self.resources.pop((kind, rid), None)
            if res:
                (self.deleted if kind == "whip" else self.watch_deleted).append(rid)
            return res

    def keepalive_loop(self):
        while True:
            time.sleep(KEEPALIVE_EVERY)
            with self.lock:
                sessions = [r.session for r in self.resources.values()]
            for s in sessions:
                try:
                    self.janus.keepalive(s)
                except (JanusDown, JanusError):
                    pass  # Janus restarted or is down: the resource stays until DELETEd


def ensure_room(janus, session, handle, room):
    """Creates the VideoRoom `room` unless it exists (H.264 + Opus, not permanent)."""
    if janus.sync(session, handle, {"request": "exists", "room": room}).get("exists"):
        return
    try:
        janus.sync(session, handle, {
            "request": "create", "room": room, "permanent": False,
            "description": f"onair WHIP room {room}", "publishers": 16,
            "videocodec": "h264", "audiocodec": "opus", "notify_joining": False,
        })
    except JanusError as e:
        if e.code != ROOM_EXISTS:  # another POST made it meanwhile
            raise


def participants(janus, room):
    """The room's participants per Janus (listparticipants), [] if none or Janus is down."""
    session = None
    try:
        session = janus.create_session()
        handle = janus.attach(session)
        return janus.sync(session, handle, {"request": "listparticipants", "room": room}).get("participants", [])
    except (JanusDown, JanusError):
        return []
    finally:
        if session is not None:
            try:
                janus.destroy(session)
            except (JanusDown, JanusError):
                pass


WATCH_HTML = r"""<!doctype html>
<meta charset="utf-8">
<title>watch</title>
<style>body{margin:0;background:#000}video{width:100%;max-height:100vh}</style>
<video id="v" muted autoplay playsinline></video>
<pre id="log" style="color:#ccc"></pre>
<script>
const room = new URLSearchParams(location.search).get('room') || '%ROOM%';
const log = (m) => { document.getElementById('log').textContent += m + '\n'; };
window.watchError = null;
window.pc = null;
function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
    setTimeout(resolve, 2000);
  });
}
async function watch() {
  const res = await fetch('/watch/' + encodeURIComponent(room), { method: 'POST' });
  const offer = await res.text();
  if (res.status !== 201) throw new Error('POST /watch/' + room + ': HTTP ' + res.status + ': ' + offer);
  const resource = res.headers.get('Location');
  const pc = window.pc = new RTCPeerConnection();
  const stream = new MediaStream();
  const video = document.getElementById('v');
  pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
  pc.onconnectionstatechange = () => log('connection ' + pc.connectionState);
  await pc.setRemoteDescription({ type: 'offer', sdp: offer });
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  const patch = await fetch(resource, { method: 'PATCH', headers: { 'Content-Type': 'application/sdp' },
    body: pc.localDescription.sdp });
  if (patch.status !== 204) throw new Error('PATCH ' + resource + ': HTTP ' + patch.status + ': ' + await patch.text());
  window.resource = resource;
  log('watching ' + resource);
}
window.stats = async () => {
  const out = { framesDecoded: 0, width: 0, height: 0, audioPacketsReceived: 0, totalSamplesReceived: 0,
    audioLevel: null, connectionState: window.pc ? window.pc.connectionState : 'none', error: window.watchError };
  if (!window.pc) return out;
  for (const s of (await window.pc.getStats()).values()) {
    if (s.type !== 'inbound-rtp') continue;
    if (s.kind === 'video') {
      out.framesDecoded = s.framesDecoded || 0;
      out.width = s.frameWidth || 0;
      out.height = s.frameHeight || 0;
      out.codecId = s.codecId;
    } else if (s.kind === 'audio') {
      out.audioPacketsReceived = s.packetsReceived || 0;
      out.totalSamplesReceived = s.totalSamplesReceived || 0;
      out.audioLevel = s.audioLevel ?? null;
    }
  }
  return out;
};
watch().catch((e) => { window.watchError = String(e); log(String(e)); });
</script>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "janus-whip/1"
    protocol_version = "HTTP/1.1"
    state: State = None

    # ---- plumbing --------------------------------------------------------------------------
    def log_message(self, fmt, *args):  # the default one line per request, to stderr
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.address_string()} {fmt % args}\n")
        sys.stderr.flush()

    def reply(self, status, body=b"", ctype="text/plain; charset=utf-8", headers=()):
        # A request body left unread would be taken for the next request on this connection.
        if not getattr(self, "_body_read", False):
            try:
                self.body()
            except Status:
                self.close_connection = True
        if isinstance(body, str):
            body = body.encode()
        if body and not body.endswith(b"\n") and ctype.startswith("text/plain"):
            body += b"\n"
        self.send_response(status)
        if body:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self):
        if getattr(self, "_body_read", False):
            return b""
        self._body_read = True
        n = self.headers.get("Content-Length")
        if n is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raise BadRequest("chunked request bodies are not supported: send Content-Length")
            return b""
        try:
            n = int(n)
        except ValueError:
            raise BadRequest(f"bad Content-Length {n!r}") from None
        if n < 0 or n > 1 << 20:
            raise BadRequest(f"Content-Length {n} out of range (at most 1 MiB)")
        return self.rfile.read(n)

    def sdp_body(self):
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            raise Status(415, f"Content-Type must be application/sdp, not {ctype or 'missing'!r}")
        try:
            sdp = self.body().decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the SDP is not UTF-8") from None
        if not sdp.lstrip().startswith("v=0"):
            raise BadRequest("the body is not an SDP (it must start with v=0)")
        return sdp

    def authorized(self):
        token = self.state.args.token
        if token is None:
            return True
        auth = self.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(value.strip().encode(), token.encode()):
            return True
        with self.state.lock:
            self.state.unauthorized += 1
        self.reply(401, "a valid bearer token is required" if auth else "missing Authorization: Bearer token",
                   headers=[("WWW-Authenticate", 'Bearer realm="whip"')])
        return False

    def route(self):
        u = urlsplit(self.path)
        parts = [p for p in u.path.split("/") if p]
        return u, parts

    def dispatch(self, table):
        self._body_read = False
        try:
            u, parts = self.route()
            for (method, prefix, n), fn in table.items():
                if method == self.command and len(parts) == n and parts[:1] == [prefix]:
                    return fn(u, parts)
            known = {(prefix, n) for (_, prefix, n) in table}
            if parts[:1] and (parts[0], len(parts)) in known:
                allowed = sorted(m for (m, p, n) in table if (p, n) == (parts[0], len(parts)))
                return self.reply(405, f"{self.command} not allowed on {u.path}", headers=[("Allow", ", ".join(allowed))])
            return self.reply(404, f"nothing at {u.path}")
        except Status as e:
            self.reply(e.status, e.reason, headers=e.headers)
        except Exception as e:  # a bug here: say so, keep serving
            self.reply(500, f"{type(e).__name__}: {e}")
            raise

    def do_POST(self):
        self.dispatch({("POST", "whip", 2): self.post_whip, ("POST", "redirect", 2): self.post_redirect,
                       ("POST", "busy", 2): self.post_busy,
                       ("POST", "watch", 2): self.post_watch})

    def do_DELETE(self):
        self.dispatch({("DELETE", "whip", 3): self.delete_whip, ("DELETE", "watch", 3): self.delete_watch})

    def do_PATCH(self):
        self.dispatch({("PATCH", "whip", 3): self.patch_whip, ("PATCH", "watch", 3): self.patch_watch})

    def do_GET(self):
        self.dispatch({("GET", "state", 1): self.get_state, ("GET", "watch.html", 1): self.get_page})

    def do_PUT(self):
        self.dispatch({})

    def do_HEAD(self):
        self.dispatch({})

    def do_OPTIONS(self):
        # RFC 9725 §4.1: OPTIONS on the endpoint (no CORS here: everything is same-origin).
        self.dispatch({("OPTIONS", "whip", 2): lambda u, p: self.reply(
            204, headers=[("Accept-Post", "application/sdp"), ("Allow", "POST, OPTIONS")])})

    # ---- WHIP --------------------------------------------------------------------------------
    def post_whip(self, u, parts):
        st = self.state
        with st.lock:
            st.posts += 1
        if not self.authorized():
            return
        room = room_id(parts[1])
        offer = self.sdp_body()
        janus, session = st.janus, None
        try:
            session = janus.create_session()
            handle = janus.attach(session)
            ensure_room(janus, session, handle, room)
            janus.message(session, handle,
                          {"request": "joinandconfigure", "ptype": "publisher", "room": room, "display": "whip"},
                          {"type": "offer", "sdp": offer, "trickle": False})
            jsep, data = janus.wait_jsep(session)
            if jsep.get("type") != "answer":
                raise JanusError(f"Janus sent a JSEP {jsep.get('type')!r}, not an answer")
        except Exception as e:
            if session is not None:
                try:
                    janus.destroy(session)
                except (JanusDown, JanusError):
                    pass
            with st.lock:
                st.errors.append(str(e))
            raise janus_status(e) from None
        rid = secrets.token_hex(8)
        res = Resource("whip", room, rid, session, handle)
        res.publisher = data.get("id")
        st.add(res)
        self.reply(201, jsep["sdp"], "application/sdp", headers=[
            ("Location", f"/whip/{room}/{rid}"), ("ETag", res.etag), ("Link", ICE_SERVER_LINK)])

    def delete_whip(self, u, parts):
        if not self.authorized():
            return
        self.delete("whip", parts)

    def patch_whip(self, u, parts):
        if not self.authorized():
            return
        # Drain the body so the connection stays usable.
        self.body()
        with self.state.lock:
            known = ("whip", parts[2]) in self.state.resources
        if not known:
            return self.reply(404, f"no WHIP resource {parts[2]}")
        self.reply(405, "this WHIP front supports neither trickle ICE nor ICE restarts",
                   headers=[("Allow", "DELETE")])

    def post_redirect(self, u, parts):
        self.body()
        room = room_id(parts[1])
        self.reply(307, f"see /whip/{room}", headers=[("Location", f"/whip/{room}")])

    def post_busy(self, u, parts):
        self.body()
        room = room_id(parts[1])
        with self.state.lock:
            self.state.busy_posts.append(time.time())
            first = len(self.state.busy_posts) == 1
        if first:
            return self.reply(429, "busy: come back in 3 s", headers=[("Retry-After", "3")])
        self.reply(307, f"see /whip/{room}", headers=[("Location", f"/whip/{room}")])

    def delete(self, kind, parts):
        rid = parts[2]
        res = self.state.remove(kind, rid)
        if res is None or str(res.room) != parts[1]:
            return self.reply(404, f"no {kind} resource {parts[1]}/{rid}")
        note = "deleted"
        try:
            self.state.janus.destroy(res.session)
        except (JanusDown, JanusError) as e:
            note = f"deleted (Janus had already lost it: {e})"
        self.reply(200, note)

    # ---- watching --------------------------------------------------------------------------
    def post_watch(self, u, parts):
        st = self.state
        room = room_id(parts[1])
        self.body()
        janus, session = st.janus, None
        try:
            session = janus.create_session()
            handle = janus.attach(session)
            try:
                people = janus.sync(session, handle, {"request": "listparticipants", "room": room}).get("participants", [])
            except JanusError as e:
                if e.code == NO_SUCH_ROOM:
                    raise Status(404, f"no room {room} on Janus (nobody has published to it)") from None
                raise
            feed = next((p["id"] for p in people if p.get("publisher")), None)
            if feed is None:
                raise Status(404, f"room {room} has no publisher")
            janus.message(session, handle,
                          {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]})
            jsep, _ = janus.wait_jsep(session)
            if jsep.get("type") != "offer":
                raise JanusError(f"Janus sent a JSEP {jsep.get('type')!r}, not an offer")
        except Exception as e:
            if session is not None:
                try:
                    janus.destroy(session)
                except (JanusDown, JanusError):
                    pass
            raise e if isinstance(e, Status) else janus_status(e) from None
        rid = secrets.token_hex(8)
        res = Resource("watch", room, rid, session, handle)
        res.feed = feed
        st.add(res)
        self.reply(201, jsep["sdp"], "application/sdp", headers=[("Location", f"/watch/{room}/{rid}"),
                                                                 ("ETag", res.etag)])

    def patch_watch(self, u, parts):
        answer = self.sdp_body()
        with self.state.lock:
            res = self.state.resources.get(("watch", parts[2]))
        if res is None or str(res.room) != parts[1]:
            return self.reply(404, f"no watch resource {parts[1]}/{parts[2]}")
        try:
            self.state.janus.message(res.session, res.handle, {"request": "start"},
                                     {"type": "answer", "sdp": answer, "trickle": False})
        except (JanusDown, JanusError) as e:
            raise janus_status(e) from None
        self.reply(204)

    def delete_watch(self, u, parts):
        self.delete("watch", parts)

    # ---- pages and state -------------------------------------------------------------------
    def get_page(self, u, parts):
        self.reply(200, WATCH_HTML.replace("%ROOM%", str(self.state.args.room)), "text/html; charset=utf-8")

    def get_state(self, u, parts):
        st = self.state
        query = parse_qs(u.query)
        room = room_id(query["room"][0]) if "room" in query else st.args.room
        people = participants(st.janus, room)
        with st.lock:
            out = {
                "posts": st.posts, "created": list(st.created), "deleted": list(st.deleted),
                "unauthorized": st.unauthorized,
                "busy_posts": list(st.busy_posts),
                "publishers": [p for p in people if p.get("publisher")],
                "room": room,
                "live": sorted(r.id for r in st.resources.values() if r.kind == "whip"),
                "watch_created": list(st.watch_created), "watch_deleted": list(st.watch_deleted),
                "errors": list(st.errors[-10:]),
            }
        self.reply(200, json.dumps(out), "application/json")


class Status(Exception):
    def __init__(self, status, reason, headers=()):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, list(headers)


class BadRequest(Status):
    def __init__(self, reason):
        super().__init__(400, reason)


def room_id(text):
    try:
        room = int(text)
    except ValueError:
        raise BadRequest(f"room must be a number, not {text[:40]!r}") from None
    if not 0 < room < 1 << 53:
        raise BadRequest(f"room {room} out of range")
    return room


def janus_status(e):
    """The HTTP status for a failure talking to Janus."""
    if isinstance(e, Status):
        return e
    if isinstance(e, TimeoutError):
        return Status(504, str(e))
    if isinstance(e, JanusDown):
        return Status(502, str(e))
    if isinstance(e, JanusError):
        # The VideoRoom's complaints about the request (bad SDP, codecs) are the client's.
        client = e.code is not None and 420 <= int(e.code) < 500 or "SDP" in str(e)
        return Status(400 if client else 502, str(e))
    return Status(500, f"{type(e).__name__}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:8090", help="HOST:PORT (default 127.0.0.1:8090)")
    ap.add_argument("--janus", default="http://127.0.0.1:8088/janus", help="Janus's HTTP API")
    ap.add_argument("--token", help="the bearer token WHIP clients must send (none: no check)")
    ap.add_argument("--room", type=int, default=1234, help="the room /state and /watch.html default to")
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    Handler.state = State(args)
    threading.Thread(target=Handler.state.keepalive_loop, daemon=True).start()
    server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    server.daemon_threads = True
    sys.stderr.write(f"janus_whip listening on http://{args.listen} (Janus {args.janus}, room {args.room})\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
