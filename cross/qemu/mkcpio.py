#!/usr/bin/env python3
"""Writes a directory tree as a gzip-compressed cpio "newc" archive (an initramfs).

Usage: mkcpio.py DIR OUT.cpio.gz

Every entry is owned by root with a fixed timestamp, so no root rights or fakeroot are needed
and the same tree gives the same archive. /dev/console is added (the kernel opens it for
/init's stdio before devtmpfs is mounted).
"""
import gzip
import os
import stat
import sys


def header(ino, mode, size, name, nlink=1, rdev=(0, 0)):
    namesize = len(name) + 1
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], namesize, 0]
    h = b"070701" + b"".join(b"%08x" % f for f in fields) + name + b"\0"
    return h + b"\0" * (-len(h) % 4)


def main():
    root, out = sys.argv[1], sys.argv[2]
    entries = []  # (name, mode, data, rdev)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            entries.append((rel, os.lstat(dirpath).st_mode, b"", (0, 0)))
        for f in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            name = os.path.normpath(os.path.join(rel, f))
            if stat.S_ISLNK(st.st_mode):
                entries.append((name, st.st_mode, os.readlink(p).encode(), (0, 0)))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    entries.append((name, st.st_mode, fh.read(), (0, 0)))
        # os.walk would descend into symlinked directories only with followlinks; it does not.
    names = {e[0] for e in entries}
    if "dev" not in names:
        entries.append(("dev", stat.S_IFDIR | 0o755, b"", (0, 0)))
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    with open(out + ".tmp", "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:
            for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
                nlink = 2 if stat.S_ISDIR(mode) else 1
                gz.write(header(ino, mode, len(data), name.encode(), nlink, rdev))
                gz.write(data + b"\0" * (-len(data) % 4))
            gz.write(header(0, 0, 0, b"TRAILER!!!"))
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
