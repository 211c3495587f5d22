#!/usr/bin/env python3
"""Byte-for-byte comparison of two builds' HTTP answers: the check of a move-only change.

Usage: scripts/exchanges.py OLD_BINARY NEW_BINARY [--rounds N] [--show]

For each binary in turn (alternating over the rounds), starts `flashsale serve` on a free
loopback port with a database and a Redis key prefix of its own (dropped and deleted after),
waits for GET /ready, and sends the same list of raw exchanges over plain sockets: the API's
answers and errors, webhooks (signed and not), the admin API, framing edge cases (HTTP/1.0,
pipelining, chunked bodies, smuggling shapes, bare LF, oversized heads and bodies). Every
answer is recorded as the raw bytes the server wrote, with what varies between runs replaced by
placeholders: the Date header, order references (by order of first appearance), RFC 3339
times, and Retry-After seconds. Exits 1 when the two builds answered any exchange differently,
printing a unified diff of the first differing exchanges.

Needs PostgreSQL and Redis as scripts/services.sh starts them, and psql/redis-cli.
"""

import argparse
import difflib
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid

PG = os.environ.get("PGURL_ADMIN", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "exchanges-secret"
ADMIN = "exchanges-admin-token-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql, db="postgres"):
    subprocess.run(
        ["psql", "-q", "-X", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
        check=True,
        stdout=subprocess.DEVNULL,
    )


class Server:
    """One `flashsale serve` with its own database and key prefix."""

    def __init__(self, binary):
        self.binary = binary
        tag = uuid.uuid4().hex[:10]
        self.db = f"exch_{tag}"
        self.prefix = f"exch{tag}"
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="exchanges-", suffix=".log", delete=False)
        psql(f"CREATE DATABASE {self.db}")
        self.env = dict(
            os.environ,
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{self.db}",
            REDIS_URL=REDIS_URL,
            FLASHSALE_REDIS_PREFIX=self.prefix,
            FLASHSALE_LISTEN=f"127.0.0.1:{self.port}",
            FLASHSALE_WORKERS="2",
            PAYMENT_WEBHOOK_SECRET=SECRET,
            FLASHSALE_ADMIN_TOKEN=ADMIN,
            FLASHSALE_HOLD_SECS="600",
            RUST_LOG="flashsale=warn",
        )
        subprocess.run([binary, "migrate"], env=self.env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([binary, "seed"], env=self.env, check=True, stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen([binary, "serve"], env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if exchange(self.port, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{binary} did not become ready; log in {self.log.name}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        psql(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        subprocess.run(
            ["redis-cli", "-u", REDIS_URL, "--scan", "--pattern", f"{self.prefix}:*"],
            check=True,
            stdout=open(self.log.name + ".keys", "w"),
        )
        with open(self.log.name + ".keys") as f:
            keys = [k.strip() for k in f if k.strip()]
        for i in range(0, len(keys), 500):
            subprocess.run(["redis-cli", "-u", REDIS_URL, "UNLINK", *keys[i : i + 500]], stdout=subprocess.DEVNULL)
        os.unlink(self.log.name + ".keys")


def exchange(port, raw, settle=0.3):
    """Sends `raw` on a new connection and returns every byte the server wrote until it closed
    or went quiet for `settle` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        s.settimeout(settle)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                # The server closed with unread bytes of ours (an oversized request): what it
                # wrote before is all there is.
                out += b"<reset>"
                break
            if not chunk:
                break
            out += chunk
        return out


def req(method, path, body=None, headers=(), version="HTTP/1.1", close=True):
    lines = [f"{method} {path} {version}", "Host: x"]
    lines += list(headers)
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else body.encode()
        lines.append(f"Content-Length: {len(data)}")
    if close and version == "HTTP/1.1":
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def signed(body):
    return ("X-Payment-Signature: " + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest(),)


AUTH = (f"Authorization: Bearer {ADMIN}",)
REF = re.compile(rb"\b\d+-[0-9A-HJKMNP-TV-Z]{26}\b")


def script():
    """The exchanges, in order. Each is (name, function of captured references -> raw bytes)."""
    order = '{"product_id": 1, "qty": 2, "user_id": "u-1"}'
    steps = [
        ("health", lambda r: req("GET", "/health")),
        ("ready", lambda r: req("GET", "/ready")),
        ("product", lambda r: req("GET", "/api/products/1")),
        ("product abc", lambda r: req("GET", "/api/products/abc")),
        ("product -1", lambda r: req("GET", "/api/products/-1")),
        ("product huge", lambda r: req("GET", "/api/products/99999999999999999999")),
        ("product unknown", lambda r: req("GET", "/api/products/4242")),
        ("order", lambda r: req("POST", "/api/orders", order, ("Idempotency-Key: k-1",))),
        ("order replay", lambda r: req("POST", "/api/orders", order, ("Idempotency-Key: k-1",))),
        ("order key reused", lambda r: req("POST", "/api/orders", order.replace('"qty": 2', '"qty": 3'), ("Idempotency-Key: k-1",))),
        ("order get", lambda r: req("GET", f"/api/orders/{r[0]}")),
        ("order unknown", lambda r: req("GET", "/api/orders/1-01ARZ3NDEKTSV4RRFFQ69G5FAV")),
        ("order bad json", lambda r: req("POST", "/api/orders", "{bad")),
        ("order array", lambda r: req("POST", "/api/orders", "[1]")),
        ("order invalid", lambda r: req("POST", "/api/orders", '{"product_id": "abc", "qty": 0, "user_id": 5}')),
        ("order too many", lambda r: req("POST", "/api/orders", '{"product_id": 1, "qty": 11}')),
        ("order insufficient", lambda r: req("POST", "/api/orders", '{"product_id": 2, "qty": 10, "user_id": "x"}')),
        ("order unknown product", lambda r: req("POST", "/api/orders", '{"product_id": 4242, "qty": 1}')),
        ("order numeric strings", lambda r: req("POST", "/api/orders", '{"product_id": "1", "qty": "1"}')),
        ("order 413", lambda r: req("POST", "/api/orders", "{" + " " * 17000 + "}")),
        ("webhook unsigned", lambda r: req("POST", "/api/payments/webhook", '{"order_reference": "x", "status": "success"}')),
        ("webhook invalid", lambda r: req("POST", "/api/payments/webhook", '{"status": "processed"}', signed('{"status": "processed"}'))),
        ("webhook pay", lambda r: (lambda b: req("POST", "/api/payments/webhook", b, signed(b)))(f'{{"order_reference": "{r[0]}", "status": "success"}}')),
        ("webhook repeat", lambda r: (lambda b: req("POST", "/api/payments/webhook", b, signed(b)))(f'{{"order_reference": "{r[0]}", "status": "success"}}')),
        ("webhook fail", lambda r: (lambda b: req("POST", "/api/payments/webhook", b, signed(b)))(f'{{"order_reference": "{r[1]}", "status": "failure"}}')),
        ("webhook early", lambda r: (lambda b: req("POST", "/api/payments/webhook", b, signed(b)))('{"order_reference": "no-such-order", "status": "success"}')),
        ("not found", lambda r: req("GET", "/nope")),
        ("method", lambda r: req("DELETE", "/api/orders")),
        ("http/1.0", lambda r: req("GET", "/health", version="HTTP/1.0")),
        ("keep-alive pipelined", lambda r: req("GET", "/health", close=False) + req("GET", "/api/products/2", close=False) + req("GET", "/health")),
        ("chunked", lambda r: b"POST /api/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1b\r\n{\"product_id\": 2, \"qty\": 1}\r\n0\r\n\r\n"),
        ("smuggling cl+te", lambda r: b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("smuggling two cl", lambda r: b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
        ("bare lf", lambda r: b"GET /health HTTP/1.1\nHost: x\n\n"),
        ("head too large", lambda r: b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n"),
        ("admin no token", lambda r: req("GET", "/admin/orders")),
        ("admin create", lambda r: req("POST", "/admin/products", '{"name": "X", "price_cents": 500, "stock": 50, "max_per_order": 5}', AUTH)),
        ("admin create invalid", lambda r: req("POST", "/admin/products", '{"name": "", "price_cents": -1}', AUTH)),
        ("admin patch", lambda r: req("PATCH", "/admin/products/3", '{"price_cents": 700, "per_user_limit": 2}', AUTH)),
        ("admin stock", lambda r: req("POST", "/admin/products/3/stock", '{"delta": 5}', AUTH)),
        ("admin stock insufficient", lambda r: req("POST", "/admin/products/3/stock", '{"delta": -1000}', AUTH)),
        ("admin stats", lambda r: req("GET", "/admin/products/1/stats", None, AUTH)),
        ("admin orders", lambda r: req("GET", "/admin/orders?product_id=1&limit=5", None, AUTH)),
        ("admin orders bad", lambda r: req("GET", "/admin/orders?limit=0", None, AUTH)),
        ("admin late payments", lambda r: req("GET", "/admin/late-payments?refunded=false", None, AUTH)),
        ("admin refund unknown", lambda r: req("POST", "/admin/late-payments/nope/refund", None, AUTH)),
        ("admin close", lambda r: req("POST", "/admin/products/3/close", None, AUTH)),
        ("order after close", lambda r: req("POST", "/api/orders", '{"product_id": 3, "qty": 1, "user_id": "u"}')),
    ]
    return steps


def normalise(raw, refs):
    raw = re.sub(rb"Date: [^\r\n]*", b"Date: <date>", raw)
    raw = re.sub(rb"Retry-After: \d+", b"Retry-After: <n>", raw)
    raw = re.sub(rb'"retry_after_secs":\s*\d+', b'"retry_after_secs": <n>', raw)
    for m in REF.findall(raw):
        if m not in refs:
            refs.append(m)
    for i, m in enumerate(refs):
        raw = raw.replace(m, f"<ref{i}>".encode())
    # Times vary; their lengths change Content-Length: both are normalised.
    raw = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", b"<time>", raw)
    raw = re.sub(rb"Content-Length: \d+", b"Content-Length: <n>", raw)
    return raw


def run(binary):
    srv = Server(binary)
    try:
        # References seen so far, in order: the steps name them (`r[0]` is the first order's,
        # paid by a webhook; `r[1]` the second's, failed).
        refs, answers = [], []
        for name, make in script():
            seen = [r.decode() for r in refs] + ["", ""]
            raw = exchange(srv.port, make(seen))
            answers.append((name, normalise(raw, refs)))
        return answers
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--show", action="store_true", help="print every normalised exchange of the last round")
    a = ap.parse_args()
    same_rounds = 0
    for rnd in range(a.rounds):
        order = [a.old, a.new] if rnd % 2 == 0 else [a.new, a.old]
        got = {b: run(b) for b in order}
        old, new = got[a.old], got[a.new]
        diffs = [(o[0], o[1], n[1]) for o, n in zip(old, new) if o[1] != n[1]]
        print(f"round {rnd + 1}: {len(old)} exchanges, {len(diffs)} differ")
        for name, o, n in diffs[:5]:
            print(f"--- {name}")
            sys.stdout.writelines(
                difflib.unified_diff(
                    o.decode(errors="replace").splitlines(True),
                    n.decode(errors="replace").splitlines(True),
                    "old", "new",
                )
            )
        if not diffs:
            same_rounds += 1
        if a.show and rnd == a.rounds - 1:
            for name, raw in new:
                print(f"=== {name}\n{raw.decode(errors='replace')}")
    print(f"{same_rounds} of {a.rounds} rounds byte-identical")
    sys.exit(0 if same_rounds == a.rounds else 1)


if __name__ == "__main__":
    main()
