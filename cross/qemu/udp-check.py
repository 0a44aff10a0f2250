#!/usr/bin/env python3
"""Host side of the harness's UDP check (the guest runs onair-udp-echo on the port range).

Checks what WebRTC needs from QEMU's UDP hostfwd, with the daemon announcing 127.0.0.1:<port>:
 1. a datagram sent to 127.0.0.1:P reaches the guest's port P and the reply comes back from
    127.0.0.1:P, the same address the viewer sent to (otherwise ICE drops it);
 2. the mapping holds for repeated sends and for several viewer sockets at once;
 3. a guest-initiated send from port P to the address the guest saw the viewer at (a check to a
    peer-reflexive candidate) also arrives from 127.0.0.1:P.

Usage: udp-check.py [PORT_MIN PORT_MAX]   (default 50000 50019); exit status 1 on a failure.
"""
import re
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.settimeout(3)
    return s


def host_addresses():
    """This host's non-loopback IPv4 addresses (from `ip -4 -o addr`)."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return []
    return [a for a in re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out) if not a.startswith("127.")]


def exchange(s, port, payload):
    """Sends payload to HOST:port, returns (reply, source address, round-trip ms)."""
    t = time.monotonic()
    s.sendto(payload, (HOST, port))
    data, src = s.recvfrom(2048)
    return data.decode(errors="replace"), src, (time.monotonic() - t) * 1000


def main():
    lo, hi = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (50000, 50019)
    failures = []
    ok = lambda cond, msg: print(("ok   " if cond else "FAIL ") + msg) or (cond or failures.append(msg))

    # 1. Every port of the range, one viewer socket.
    s = udp()
    seen_from = {}
    for port in range(lo, hi + 1):
        try:
            reply, src, ms = exchange(s, port, b"hello %d" % port)
        except socket.timeout:
            ok(False, f"port {port}: no reply within 3 s")
            continue
        m = re.search(r"port=(\d+) from=([\d.]+):(\d+)", reply)
        seen_from[port] = (m.group(2), int(m.group(3))) if m else None
        ok(src == (HOST, port) and m and int(m.group(1)) == port,
           f"port {port}: reply from {src[0]}:{src[1]} in {ms:.1f} ms; guest saw the viewer "
           f"{s.getsockname()[0]}:{s.getsockname()[1]} as {m.group(2)}:{m.group(3) if m else '?'}")

    # 2. Repeated sends, and a second viewer socket on the same guest port.
    port = lo
    srcs = set()
    for i in range(20):
        _, src, _ = exchange(s, port, b"again %d" % i)
        srcs.add(src)
    ok(srcs == {(HOST, port)}, f"20 more datagrams to {port}: replies from {sorted(srcs)}")
    s2 = udp()
    reply2, src2, _ = exchange(s2, port, b"second viewer")
    m2 = re.search(r"from=([\d.]+):(\d+)", reply2)
    ok(src2 == (HOST, port),
       f"second viewer socket {s2.getsockname()[1]} -> {port}: reply from {src2[0]}:{src2[1]}; "
       f"guest saw it as {m2.group(1)}:{m2.group(2)}")

    # 3. Guest-initiated send to where the guest saw the viewer (ICE check to a prflx candidate).
    if seen_from.get(port):
        addr, gport = seen_from[port]
        s.sendto(f"PROBE {addr}:{gport}".encode(), (HOST, port))
        try:
            data, src = s.recvfrom(2048)
            ok(src == (HOST, port) and data.startswith(b"probe port=%d" % port),
               f"guest-initiated send from port {port} to {addr}:{gport}: arrived from "
               f"{src[0]}:{src[1]}: {data.decode(errors='replace')!r}")
        except socket.timeout:
            ok(False, f"guest-initiated send from port {port} to {addr}:{gport}: nothing arrived")
        # ... and to a host socket that never sent to the guest (not needed by ICE here).
        s3 = udp()
        s3.settimeout(2)
        s.sendto(f"PROBE {addr}:{s3.getsockname()[1]}".encode(), (HOST, port))
        try:
            data, src = s3.recvfrom(2048)
            print(f"info guest-initiated send to a host port that never sent to the guest "
                  f"({addr}:{s3.getsockname()[1]}): arrived from {src[0]}:{src[1]}")
        except socket.timeout:
            print(f"info guest-initiated send to a host port that never sent to the guest "
                  f"({addr}:{s3.getsockname()[1]}): not delivered")

    # 4. A viewer socket bound to one of this host's non-loopback addresses (as browsers bind
    #    theirs) sending to 127.0.0.1: QEMU hands the guest that address as the source, which the
    #    guest cannot reach (no default route), so no reply. Loopback viewers must be unaffected.
    port = lo + 1 if hi > lo else lo
    for addr in host_addresses():
        s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s4.bind((addr, 0))
        s4.settimeout(2)
        s4.sendto(b"from a non-loopback address", (HOST, port))
        try:
            data, src = s4.recvfrom(2048)
            print(f"info viewer socket on {addr} -> {HOST}:{port}: reply from {src[0]}:{src[1]}: {data.decode(errors='replace')!r}")
        except socket.timeout:
            print(f"info viewer socket on {addr} -> {HOST}:{port}: no reply (QEMU passes {addr} on as the source; the guest has no route back)")
        reply, src, _ = exchange(udp(), port, b"loopback after non-loopback")
        ok(src == (HOST, port), f"loopback viewer -> {port} afterwards: reply from {src[0]}:{src[1]}")
        break

    print(f"{'FAILED' if failures else 'PASSED'}: UDP {lo}-{hi} through QEMU user networking "
          f"({len(failures)} failure(s))")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
