#!/usr/bin/env python3
"""Hostile clients for scripts/bench.sh --attack (stdlib only, one thread, epoll).

    attack.py chunks --addr HOST:PORT [--conns 4] [--piece 128] [--warmup SECS]
    attack.py idle --addr HOST:PORT [--source 127.0.0.2] [--conns 20000] [--warmup SECS]

chunks: --conns connections each send
    POST /api/orders HTTP/1.1\\r\\nHost: x\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n1;
and then an endless chunk extension, `a` repeated, one --piece bytes long send() after
another (TCP_NODELAY, so each is its own segment) for as long as the server reads. When the
server answers (431 expected after 16 KiB) or closes, the connection is closed and a new one
opened at once.

idle: --conns connections from --source (bound before connect, to a source port this script
picks: the oldest one free of 1024-65535) that never send a byte. Whenever the server closes
one (503 over the per-address cap, or silence at its header timeout) or a connect fails, a
new one is opened at once (after 10 ms if sockets cannot be created at all). The open-file
limit is raised to the hard limit first, and --conns lowered to fit under it.

Both run until SIGTERM or SIGINT (or --max-seconds, or their parent exits), then print one
line of key=value pairs on stdout about the time after --warmup (the figures named total_*
cover the whole run):

    chunks: seconds= conns= closed= answers= bytes= sends= total_conns= statuses=431:n;...
            bytes_per_s= sends_per_s= conns_per_s= bytes_per_conn= bytes_per_conn_max=

bytes_per_conn counts what send() took on a connection before it closed: the server read at
most 16 KiB of it, the rest sat in the kernel's socket buffers.
    idle:   seconds= target= held_avg= held_max= connecting_avg= connects= refused=
            silent_closes= resets= other_answers= connect_errors= total_refused=
            total_connects= connects_per_s= refused_per_s=

held counts sockets whose connect completed (so the server's kernel holds them, admitted or in
the accept queue) and that this script has not seen closed yet, connecting those whose
handshake is not done (SYN dropped while the accept queue is full); both sampled every 100 ms.
refused counts 503 answers; silent_closes counts closes without a byte (the header timeout).
"""

import argparse
import collections
import errno
import os
import resource
import select
import selectors
import signal
import socket
import sys
import time

CHUNK_HEAD = b"POST /api/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;"
SAMPLE_EVERY = 0.1


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


class Run:
    """Stop flag (signals, --max-seconds, parent gone) and the measurement window."""

    def __init__(self, warmup, max_seconds):
        self.t0 = time.monotonic()
        self.t_measure = self.t0 + warmup
        self.deadline = self.t0 + max_seconds
        self.parent = os.getppid()
        self.stopped = False
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def stop(self, *_):
        self.stopped = True

    def going(self, now):
        if now > self.deadline or os.getppid() != self.parent:
            self.stopped = True
        return not self.stopped

    def measuring(self, now):
        return now >= self.t_measure

    def seconds(self, now):
        return max(1e-9, now - max(self.t_measure, self.t0))


def status_of(data):
    parts = data.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return parts[1].decode()
    return "other"


# ------------------------------------------------------------------- chunks

def chunks(a):
    host, port = split_addr(a.addr)
    piece = b"a" * a.piece
    sel = selectors.DefaultSelector()
    run = Run(a.warmup, a.max_seconds)
    st = {"conns": 0, "closed": 0, "answers": 0, "bytes": 0, "sends": 0, "total_conns": 0}
    statuses = {}
    conn_bytes = []  # bytes each connection sent before the server closed it (in the window)
    sent_on = {}  # socket -> bytes sent on it

    def count(k, n=1):
        st[k] += n

    def open_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return False
        sel.register(s, selectors.EVENT_WRITE, "connecting")
        st["total_conns"] += 1
        if run.measuring(time.monotonic()):
            count("conns")
        return True

    def finish(s, now):
        sel.unregister(s)
        s.close()
        if run.measuring(now):
            count("closed")
            conn_bytes.append(sent_on.get(s, 0))
        sent_on.pop(s, None)
        while not open_one() and run.going(time.monotonic()):
            time.sleep(0.01)

    for _ in range(a.conns):
        open_one()
    while True:
        now = time.monotonic()
        if not run.going(now):
            break
        for key, ev in sel.select(timeout=0.2):
            s = key.fileobj
            now = time.monotonic()
            measuring = run.measuring(now)
            if key.data == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    finish(s, now)
                    continue
                data = CHUNK_HEAD
                sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE, "sending")
            elif ev & selectors.EVENT_READ:
                try:
                    got = s.recv(4096)
                except OSError:
                    got = b""
                if got and measuring:
                    count("answers")
                    k = status_of(got)
                    statuses[k] = statuses.get(k, 0) + 1
                finish(s, now)
                continue
            else:
                data = piece
            try:
                n = s.send(data)
            except BlockingIOError:
                continue
            except OSError:
                finish(s, now)
                continue
            if data is CHUNK_HEAD and n < len(data):
                finish(s, now)  # a head cut short: start over rather than track a remainder
                continue
            sent_on[s] = sent_on.get(s, 0) + n
            if measuring:
                count("bytes", n)
                count("sends")
    now = time.monotonic()
    secs = run.seconds(now)
    print(" ".join([
        f"seconds={secs:.1f}",
        *(f"{k}={v}" for k, v in st.items()),
        "statuses=" + (";".join(f"{k}:{v}" for k, v in sorted(statuses.items())) or "none"),
        f"bytes_per_s={st['bytes'] / secs:.0f}",
        f"sends_per_s={st['sends'] / secs:.0f}",
        f"conns_per_s={st['conns'] / secs:.1f}",
        f"bytes_per_conn={sum(conn_bytes) / len(conn_bytes) if conn_bytes else 0:.0f}",
        f"bytes_per_conn_max={max(conn_bytes) if conn_bytes else 0}",
    ]), flush=True)


# --------------------------------------------------------------------- idle

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def idle(a):
    host, port = split_addr(a.addr)
    limit = raise_nofile()
    target = a.conns
    if target > limit - 64:
        target = max(0, limit - 64)
        print(f"attack.py idle: open-file limit {limit}: holding at most {target} connections",
              file=sys.stderr)
    ep = select.epoll()
    run = Run(a.warmup, a.max_seconds)
    st = {"connects": 0, "refused": 0, "silent_closes": 0, "resets": 0, "other_answers": 0,
          "connect_errors": 0, "total_refused": 0, "total_connects": 0}
    live = {"held": 0, "connecting": 0}
    samples_held, samples_connecting = [], []
    deficit = 0  # sockets that could not be created; retried every 10 ms
    conns = {}  # fd -> [socket, state ("connecting" or "held"), source port]

    # Source ports are handed out here, oldest free first, not by the kernel: its search for
    # a free ephemeral port slows to milliseconds per connect once half the range is taken.
    # The source address is the attacker's own, so only its own sockets hold these ports.
    free_ports = collections.deque(range(1024, 65536))

    def open_one():
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return False
        p = None
        try:
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for _ in range(64):
                if not free_ports:
                    break
                p = free_ports.popleft()
                try:
                    s.bind((a.source, p))
                    break
                except OSError:
                    p = None  # taken by another program (e.g. a listener on 0.0.0.0): dropped
            if p is None:
                raise OSError(errno.EADDRNOTAVAIL, "no free source port")
            err = s.connect_ex((host, port))
        except OSError:
            s.close()
            if p is not None:
                free_ports.append(p)
            return False
        st["total_connects"] += 1
        measuring = run.measuring(time.monotonic())
        if measuring:
            st["connects"] += 1
        if err not in (0, errno.EINPROGRESS):
            s.close()
            free_ports.append(p)
            if measuring:
                st["connect_errors"] += 1
            return False
        conns[s.fileno()] = [s, "connecting", p]
        ep.register(s.fileno(), select.EPOLLOUT)
        live["connecting"] += 1
        return True

    def close(fd):
        s, state, p = conns.pop(fd)
        ep.unregister(fd)
        s.close()
        free_ports.append(p)
        live[state] -= 1

    for _ in range(target):
        if not open_one():
            deficit += 1
    next_sample = next_retry = time.monotonic()
    while True:
        now = time.monotonic()
        if not run.going(now):
            break
        if now >= next_sample:
            if run.measuring(now):
                samples_held.append(live["held"])
                samples_connecting.append(live["connecting"])
            next_sample = max(next_sample + SAMPLE_EVERY, now)
        if deficit and now >= next_retry:
            for _ in range(deficit):
                if open_one():
                    deficit -= 1
            next_retry = now + 0.01
        # Few events at a time, so the sampling above keeps its pace.
        for fd, _ in ep.poll(0.01 if deficit else SAMPLE_EVERY, 256):
            c = conns.get(fd)
            if c is None:
                continue
            s = c[0]
            measuring = run.measuring(time.monotonic())
            if c[1] == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    close(fd)
                    if measuring:
                        st["connect_errors"] += 1
                else:
                    c[1] = "held"
                    ep.modify(fd, select.EPOLLIN)
                    live["connecting"] -= 1
                    live["held"] += 1
                    continue
            else:
                try:
                    got = s.recv(4096)
                    what = "silent_closes" if not got else (
                        "refused" if status_of(got) == "503" else "other_answers")
                except OSError:
                    what = "resets"
                close(fd)
                if what == "refused":
                    st["total_refused"] += 1
                if measuring:
                    st[what] += 1
            if not open_one():
                deficit += 1
    now = time.monotonic()
    secs = run.seconds(now)
    avg = (lambda xs: sum(xs) / len(xs) if xs else 0.0)
    print(" ".join([
        f"seconds={secs:.1f}",
        f"target={target}",
        f"held_avg={avg(samples_held):.0f}",
        f"held_max={max(samples_held) if samples_held else 0}",
        f"connecting_avg={avg(samples_connecting):.0f}",
        *(f"{k}={v}" for k, v in st.items()),
        f"connects_per_s={st['connects'] / secs:.0f}",
        f"refused_per_s={st['refused'] / secs:.0f}",
    ]), flush=True)
    for c in conns.values():
        c[0].close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("chunks")
    c.add_argument("--conns", type=int, default=4)
    c.add_argument("--piece", type=int, default=128)
    i = sub.add_parser("idle")
    i.add_argument("--conns", type=int, default=20000)
    i.add_argument("--source", default="127.0.0.2")
    for p in (c, i):
        p.add_argument("--addr", required=True)
        p.add_argument("--warmup", type=float, default=0.0)
        p.add_argument("--max-seconds", type=float, default=3600.0)
    a = ap.parse_args()
    chunks(a) if a.mode == "chunks" else idle(a)


if __name__ == "__main__":
    main()
