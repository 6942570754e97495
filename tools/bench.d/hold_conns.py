#!/usr/bin/env python3
"""Open many keep-alive client connections to a proxy and leave them idle.

Used by tools/bench to measure what an idle client connection costs a proxy in
resident memory. Each connection sends one GET (with the croupier-topic header,
so every proxy sees the same request), reads the whole response, and then stays
open and silent. One process, non-blocking sockets and a selector: holding
thousands of connections must not need thousands of threads.

Protocol with the parent, one JSON object per line on stdout:
  1. once every connection has its response (or failed, or the time ran out):
     {"phase": "ready", "wanted": N, "idle": n, "failed": n, "errors": {...}}
  2. then it waits for a line on stdin. "check" makes it test which idle
     connections the proxy still keeps open and print
     {"phase": "check", "alive": n, "closed": n}; then it closes everything
     and exits. End of stdin also closes everything and exits.
"""

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time

# How many connections may be connecting or waiting for their response at
# once: enough to open 5,000 in a second or two, few enough that the proxy's
# accept backlog (and the kernel's SYN queue) never overflows.
IN_FLIGHT_MAX = 200

# The most bytes read for one response head: the bench's bodies are 16 B and
# 4 KiB, heads are a few hundred bytes.
RESPONSE_BYTES_MAX = 64 * 1024

FD_LIMIT_WANTED = 65536


def raise_fd_limit(wanted):
    """Lift RLIMIT_NOFILE as far as the hard limit (root may raise that too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bump(errors, reason):
    errors[reason] = errors.get(reason, 0) + 1


class Conn:
    """One client connection and the bytes of its single response so far."""

    __slots__ = ("body_left", "inbox", "sock", "state")

    def __init__(self, sock):
        self.sock = sock
        self.state = "connecting"
        self.inbox = b""
        self.body_left = None


def response_complete(conn, errors):
    """Return True once conn.inbox holds a whole 2xx response, False if more is
    needed; on a malformed or non-2xx answer count it in errors and return None."""
    if conn.body_left is None:
        head_end = conn.inbox.find(b"\r\n\r\n")
        if head_end < 0:
            if len(conn.inbox) > RESPONSE_BYTES_MAX:
                bump(errors, "head too long")
                return None
            return False
        head = conn.inbox[:head_end].decode("latin-1").split("\r\n")
        status = head[0].split(" ", 2)
        if len(status) < 2 or not status[1].startswith("2"):
            key = "status " + (status[1] if len(status) > 1 else "?")
            bump(errors, key)
            return None
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            # The backends always send Content-Length; a proxy that switched to
            # chunked framing would need a chunk parser, which this holder lacks.
            bump(errors, "no content-length")
            return None
        conn.body_left = length - (len(conn.inbox) - head_end - 4)
        conn.inbox = b""
    else:
        conn.body_left -= len(conn.inbox)
        conn.inbox = b""
    return conn.body_left <= 0


def open_all(args, request):
    """Open args.count connections, each with one answered request; return the
    idle connections (their sockets are unregistered but open) and a summary."""
    sel = selectors.DefaultSelector()
    idle = []
    errors = {}
    failed = 0
    started = 0
    in_flight = 0
    deadline = time.monotonic() + args.timeout_s

    def fail(conn, reason):
        nonlocal failed, in_flight
        bump(errors, reason)
        failed += 1
        in_flight -= 1
        sel.unregister(conn.sock)
        conn.sock.close()

    while (started < args.count or in_flight > 0) and time.monotonic() < deadline:
        while started < args.count and in_flight < IN_FLIGHT_MAX:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rc = sock.connect_ex((args.host, args.port))
            started += 1
            in_flight += 1
            conn = Conn(sock)
            if rc not in (0, errno.EINPROGRESS):
                bump(errors, "connect " + errno.errorcode.get(rc, str(rc)))
                failed += 1
                in_flight -= 1
                sock.close()
                continue
            sel.register(sock, selectors.EVENT_WRITE, conn)

        for key, _ in sel.select(timeout=0.2):
            conn = key.data
            if conn.state == "connecting":
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(conn, "connect " + errno.errorcode.get(err, str(err)))
                    continue
                try:
                    # The request is tiny: one send on a fresh socket takes it all.
                    sent = conn.sock.send(request)
                except OSError as e:
                    fail(conn, "send " + errno.errorcode.get(e.errno, str(e.errno)))
                    continue
                if sent != len(request):
                    fail(conn, "short send")
                    continue
                conn.state = "reading"
                sel.modify(conn.sock, selectors.EVENT_READ, conn)
                continue
            try:
                chunk = conn.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                fail(conn, "recv " + errno.errorcode.get(e.errno, str(e.errno)))
                continue
            if not chunk:
                fail(conn, "closed before response")
                continue
            conn.inbox += chunk
            done = response_complete(conn, errors)
            if done is None:
                failed += 1
                in_flight -= 1
                sel.unregister(conn.sock)
                conn.sock.close()
            elif done:
                in_flight -= 1
                sel.unregister(conn.sock)
                conn.state = "idle"
                idle.append(conn)

    # Whatever is still pending when time ran out counts as failed.
    for key in list(sel.get_map().values()):
        bump(errors, "timeout")
        failed += 1
        key.fileobj.close()
    failed += args.count - started
    sel.close()
    summary = {
        "phase": "ready",
        "wanted": args.count,
        "idle": len(idle),
        "failed": failed,
        "errors": errors,
    }
    return idle, summary


def count_alive(idle):
    """A peek that would block means the proxy still holds the connection open;
    an empty read means it closed it."""
    alive = closed = 0
    for conn in idle:
        try:
            data = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            alive += 1
            continue
        except OSError:
            closed += 1
            continue
        if data:
            alive += 1  # unexpected bytes, but the connection is open
        else:
            closed += 1
    return {"phase": "check", "alive": alive, "closed": closed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--path", default="/16")
    parser.add_argument("--topic", default="bench")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args()

    raise_fd_limit(max(FD_LIMIT_WANTED, args.count + 100))
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        f"croupier-topic: {args.topic}\r\n\r\n"
    ).encode()

    idle, summary = open_all(args, request)
    print(json.dumps(summary), flush=True)
    for line in sys.stdin:
        if line.strip() == "check":
            print(json.dumps(count_alive(idle)), flush=True)
        break
    for conn in idle:
        conn.sock.close()


if __name__ == "__main__":
    main()
