#!/usr/bin/env python3
"""Runs tests/whep/whep_client.py unchanged (same arguments), and also reports when its first
POST /whep was sent, as epoch seconds, so that a "first frame N s after POST" can be placed on
the host clock:

    whep-timed.py [--post-time-file FILE] WHEP_CLIENT_ARGS...

The client's module-level request() is wrapped (viewer() looks it up at call time); nothing else
is changed. Exits with the client's status.
"""
import asyncio
import os
import sys
import time

args = sys.argv[1:]
post_file = None
if args[:1] == ["--post-time-file"]:
    post_file, args = args[1], args[2:]
client_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "whep")
sys.path.insert(0, os.path.normpath(client_dir))
import whep_client  # noqa: E402

_request = whep_client.request
posts = []


async def timed_request(method, url, *a, **kw):
    if method == "POST":
        posts.append(time.time())
        if post_file and len(posts) == 1:
            with open(post_file, "w") as f:
                f.write(f"{posts[0]:.3f}\n")
    return await _request(method, url, *a, **kw)


whep_client.request = timed_request
sys.argv = [whep_client.__file__] + args
sys.exit(asyncio.run(whep_client.main()))
