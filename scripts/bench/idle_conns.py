#!/usr/bin/env python3
"""Open many idle HTTP keep-alive connections to a server and hold them.

Used by scripts/bench.sh. Usage: idle_conns.py HOST PORT COUNT HOLD_SECS

Connects COUNT sockets without blocking (at most 512 connects in flight, so the listen
backlog never overflows), sends `GET /health` on each and reads the answer, so every
connection is a served keep-alive connection, then leaves them idle. When all are up it
prints `OPEN <served> <failed>` on stdout and holds them until SIGTERM/SIGINT or HOLD_SECS
pass; before exiting it prints `STILL_OPEN <n>`: how many the server had not closed.
Progress goes to stderr.
"""

import errno
import resource
import selectors
import signal
import socket
import sys
import time

REQ = b"GET /health HTTP/1.1\r\nHost: bench\r\nUser-Agent: flashsale-bench-idle\r\n\r\n"
IN_FLIGHT = 512
SETUP_TIMEOUT = 60.0


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def response_complete(buf):
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buf) >= head_end + 4 + length


def main():
    host, port, count, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    limit = raise_nofile(count + 64)
    if limit < count + 16:
        print(f"idle_conns: open-file limit {limit} too low for {count} connections", file=sys.stderr)
        count = max(0, limit - 16)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    sel = selectors.DefaultSelector()
    served, failed, started, pending = [], 0, 0, 0
    bufs = {}
    t0 = time.monotonic()
    while (started < count or pending) and not stop:
        while started < count and pending < IN_FLIGHT:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, port))
            started += 1
            if err not in (0, errno.EINPROGRESS):
                failed += 1
                s.close()
                continue
            bufs[s] = b""
            sel.register(s, selectors.EVENT_WRITE, "connect")
            pending += 1
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            if key.data == "connect":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    failed += 1
                    pending -= 1
                    sel.unregister(s)
                    s.close()
                    continue
                try:
                    s.send(REQ)
                except OSError:
                    failed += 1
                    pending -= 1
                    sel.unregister(s)
                    s.close()
                    continue
                sel.modify(s, selectors.EVENT_READ, "read")
            else:
                try:
                    chunk = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    failed += 1
                    pending -= 1
                    sel.unregister(s)
                    s.close()
                    continue
                bufs[s] += chunk
                if response_complete(bufs[s]):
                    ok = bufs[s].startswith(b"HTTP/1.1 200")
                    pending -= 1
                    sel.unregister(s)
                    if ok:
                        served.append(s)
                    else:
                        failed += 1
                        s.close()
        if time.monotonic() - t0 > SETUP_TIMEOUT:
            print(f"idle_conns: gave up after {SETUP_TIMEOUT:.0f}s with {pending} still pending",
                  file=sys.stderr)
            failed += pending
            break
    print(f"idle_conns: {len(served)} served keep-alive connections open, {failed} failed, "
          f"in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    print(f"OPEN {len(served)} {failed}", flush=True)

    deadline = time.monotonic() + hold
    while not stop and time.monotonic() < deadline:
        time.sleep(0.1)

    # A connection the server closed reads as EOF (or errors); an open idle one would block.
    still = 0
    for s in served:
        try:
            data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if data:
                still += 1  # unexpected bytes, but the connection is open
        except BlockingIOError:
            still += 1
        except OSError:
            pass
    print(f"STILL_OPEN {still}", flush=True)
    for s in served:
        s.close()


if __name__ == "__main__":
    main()
