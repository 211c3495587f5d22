#!/usr/bin/env python3
"""A paced payment-webhook client for scripts/bench.sh --attack (stdlib only).

    webhooks.py reserve --addr HOST:PORT --product ID --count N --out REFS [--conns 4]
    webhooks.py send --addr HOST:PORT --refs REFS --secret SECRET --rate PER_SEC
                     --duration SECS [--conns 4] [--latencies FILE]

`reserve` makes N reservations of one unit of product ID (`POST /api/orders`, qty 1) over
--conns keep-alive connections and writes their order references to REFS, one a line. Every
answer must be a 202; it prints `reserved=N seconds=S` on stdout.

`send` pays them: `POST /api/payments/webhook` with `{"order_reference": REF, "status":
"success"}` and `X-Payment-Signature: hex(HMAC-SHA256(SECRET, body))`, each reference once,
request i due at start + i / PER_SEC, for SECS seconds, over --conns keep-alive connections
(a thread each, taking the next due request when free). The latency of a webhook is from
writing its request to reading the whole answer; `late` is how long after its due time a
request was written (all connections busy, or this client starved of CPU), and `sched` the
latency counted from the due time (late + latency). Stops at SIGTERM/SIGINT too. Prints one
line of key=value pairs on stdout:

    sent=2000 ok=2000 paid=2000 errors=0 statuses=200:2000 p50_ms=1.2 p99_ms=3.4 max_ms=9.1
    late_p99_ms=0.3 late_max_ms=2.0 sched_p99_ms=3.6 rate=199.9 conns=4 refs_left=400

ok counts 200s, paid the 200s whose message is "Payment successful...". The latencies of
every webhook go to --latencies (milliseconds, one a line, in sending order) when given.
"""

import argparse
import hashlib
import hmac
import json
import math
import signal
import socket
import sys
import threading
import time

TIMEOUT = 10.0


class Conn:
    """One keep-alive HTTP/1.1 connection with just enough parsing for the server's answers
    (Content-Length bodies)."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.s = None
        self.buf = b""

    def connect(self):
        self.close()
        self.s = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.s is not None:
            try:
                self.s.close()
            except OSError:
                pass
        self.s = None

    def send(self, raw):
        if self.s is None:
            self.connect()
        self.s.sendall(raw)

    def read_response(self):
        """-> (status, body bytes, keep_alive)."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the response head")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        while len(rest) < length:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed in the response body")
            rest += chunk
        body, self.buf = rest[:length], rest[length:]
        if not keep:
            self.close()
        return status, body, keep


def request(method, path, body, headers=()):
    head = [f"{method} {path} HTTP/1.1", "Host: bench", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs), max(1, math.ceil(p / 100 * len(xs)))) - 1]  # nearest rank


# ------------------------------------------------------------------ reserve

def reserve(a):
    host, port = split_addr(a.addr)
    body = json.dumps({"product_id": a.product, "qty": 1}).encode()
    raw = request("POST", "/api/orders", body)
    refs, errors = [], []
    lock = threading.Lock()
    left = [a.count]

    def worker():
        c = Conn(host, port)
        try:
            while True:
                with lock:
                    if left[0] == 0 or errors:
                        return
                    left[0] -= 1
                c.send(raw)
                status, resp, _ = c.read_response()
                if status != 202:
                    with lock:
                        errors.append(f"{status} {resp[:200]!r}")
                    return
                ref = json.loads(resp)["order_reference"]
                with lock:
                    refs.append(ref)
        except Exception as e:  # noqa: BLE001 - reported, and the run fails
            with lock:
                errors.append(repr(e))
        finally:
            c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"webhooks.py reserve: {len(errors)} errors, first: {errors[0]}", file=sys.stderr)
        return 1
    with open(a.out, "w") as f:
        f.write("".join(r + "\n" for r in refs))
    print(f"reserved={len(refs)} seconds={time.monotonic() - t0:.2f}")
    return 0


# --------------------------------------------------------------------- send

def send(a):
    host, port = split_addr(a.addr)
    refs = [line.strip() for line in open(a.refs) if line.strip()]
    total = min(len(refs), int(a.rate * a.duration))
    key = a.secret.encode()
    lock = threading.Lock()
    nxt = [0]
    stop = threading.Event()
    results = []  # (index, status, paid, latency_s, late_s) or (index, None, ...) on error
    errors = []

    def on_signal(*_):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.monotonic() + 0.05

    def worker():
        c = Conn(host, port)
        while not stop.is_set():
            with lock:
                i = nxt[0]
                if i >= total:
                    return
                nxt[0] += 1
            due = t0 + i / a.rate
            while not stop.is_set():
                wait = due - time.monotonic()
                if wait <= 0:
                    break
                stop.wait(min(wait, 0.1))
            if stop.is_set():
                return
            body = json.dumps({"order_reference": refs[i], "status": "success"}).encode()
            sig = hmac.new(key, body, hashlib.sha256).hexdigest()
            raw = request("POST", "/api/payments/webhook", body, (f"X-Payment-Signature: {sig}",))
            try:
                ts = time.monotonic()
                c.send(raw)
                status, resp, _ = c.read_response()
                te = time.monotonic()
                paid = status == 200 and b"Payment successful" in resp
                with lock:
                    results.append((i, status, paid, te - ts, ts - due))
            except Exception as e:  # noqa: BLE001 - counted as an error, then reconnect
                c.close()
                with lock:
                    results.append((i, None, False, time.monotonic() - due, 0.0))
                    errors.append(repr(e))
        c.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    elapsed = time.monotonic() - t0
    results.sort()
    lat = [r[3] * 1000 for r in results if r[1] is not None]
    late = [r[4] * 1000 for r in results if r[1] is not None]
    sched = [(r[3] + r[4]) * 1000 for r in results if r[1] is not None]
    statuses = {}
    for r in results:
        k = "err" if r[1] is None else str(r[1])
        statuses[k] = statuses.get(k, 0) + 1
    if a.latencies:
        with open(a.latencies, "w") as f:
            f.write("".join(f"{r[3] * 1000:.3f}\n" for r in results if r[1] is not None))
    if errors:
        print(f"webhooks.py send: {len(errors)} errors, first: {errors[0]}", file=sys.stderr)
    print(" ".join([
        f"sent={len(results)}",
        f"ok={statuses.get('200', 0)}",
        f"paid={sum(1 for r in results if r[2])}",
        f"errors={len(errors)}",
        "statuses=" + ";".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
        f"p50_ms={pct(lat, 50):.3f}",
        f"p99_ms={pct(lat, 99):.3f}",
        f"max_ms={max(lat) if lat else float('nan'):.3f}",
        f"late_p99_ms={pct(late, 99):.3f}",
        f"late_max_ms={max(late) if late else float('nan'):.3f}",
        f"sched_p99_ms={pct(sched, 99):.3f}",
        f"rate={len(results) / elapsed if elapsed > 0 else 0:.1f}",
        f"conns={a.conns}",
        f"refs_left={len(refs) - len(results)}",
    ]), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reserve")
    r.add_argument("--addr", required=True)
    r.add_argument("--product", required=True, type=int)
    r.add_argument("--count", required=True, type=int)
    r.add_argument("--out", required=True)
    r.add_argument("--conns", type=int, default=4)
    s = sub.add_parser("send")
    s.add_argument("--addr", required=True)
    s.add_argument("--refs", required=True)
    s.add_argument("--secret", required=True)
    s.add_argument("--rate", type=float, required=True)
    s.add_argument("--duration", type=float, required=True)
    s.add_argument("--conns", type=int, default=4)
    s.add_argument("--latencies")
    a = ap.parse_args()
    return reserve(a) if a.cmd == "reserve" else send(a)


if __name__ == "__main__":
    sys.exit(main())
