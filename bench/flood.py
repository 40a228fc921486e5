#!/usr/bin/env python3
"""Floods for bench/floods.sh, from one source address, until killed.

  flood.py passwords HOST PORT SOURCE THREADS OUT    GET /v2/ with distinct wrong passwords
  flood.py joins HOST PORT SOURCE THREADS OUT        POST /join/v1 with distinct wrong tokens
  flood.py joins-old HOST PORT SOURCE THREADS OUT    the same in the join protocol before the
                                                     certificate key (for the 'before' side)
  flood.py connections HOST PORT SOURCE COUNT OUT    COUNT TCP connections that never speak

Every answer's status is counted, and the counts are written to OUT as JSON twice a second
(and at SIGTERM), so the report shows the flood ran and how the server answered it (401/403
checked, 400 malformed, 429 told to wait, 0 = refused or dropped).
"""
import base64
import collections
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time

mode, host, port, source, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
out = sys.argv[6]
counts = collections.Counter()
lock = threading.Lock()
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def report():
    with lock:
        text = json.dumps(dict(counts))
    with open(out + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(out + ".tmp", out)


def reporter():
    while True:
        time.sleep(0.5)
        report()


def done(*_):
    report()
    os._exit(0)


signal.signal(signal.SIGTERM, done)
threading.Thread(target=reporter, daemon=True).start()


def request(body_for):
    i = 0
    while True:
        i += 1
        status = 0
        try:
            raw = socket.create_connection((host, port), timeout=30, source_address=(source, 0))
            with ctx.wrap_socket(raw) as s:
                s.sendall(body_for(i))
                status = int(s.recv(64).split(b" ", 2)[1])
        except Exception:
            time.sleep(0.01)
        with lock:
            counts[status] += 1


def wrong_password(i):
    who = base64.b64encode(f"bench:wrong-{threading.get_ident()}-{i}".encode()).decode()
    return (f"GET /v2/ HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {who}\r\n"
            "Connection: close\r\n\r\n").encode()


def wrong_token(i):
    request = {
        "tokenId": "abcdef", "secret": f"{i:032x}", "node": None, "addresses": [],
        "release": {"name": "x", "version": "1.0.0", "indexSha256": "sha256:" + "0" * 64},
        "csrs": {"etcdServer": "", "etcdPeer": "", "agent": ""},
    }
    if mode == "joins":
        request["certificateKeyId"] = "0" * 32
    body = json.dumps(request).encode()
    return (f"POST /join/v1 HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


if mode == "connections":
    held = []
    for _ in range(n):
        try:
            held.append(socket.create_connection((host, port), timeout=5, source_address=(source, 0)))
            counts["open"] += 1
        except Exception:
            counts["refused"] += 1
    while True:
        time.sleep(3600)
else:
    make = wrong_password if mode == "passwords" else wrong_token
    for _ in range(n):
        threading.Thread(target=request, args=(make,), daemon=True).start()
    while True:
        time.sleep(3600)
