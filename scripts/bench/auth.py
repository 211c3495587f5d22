#!/usr/bin/env python3
"""Buyer tokens and the server's order statuses for scripts/bench.sh --auth (run by
modes/auth.py, which owns the slots, the verdicts and the tables).

    auth.py mint DIR COUNT MISS_COUNT EXP_SECS
        Writes into DIR, for COUNT buyers buyer-000001 ... (and MISS_COUNT more, miss-000001
        ..., when MISS_COUNT > 0):
          buyers.txt        the buyers' ids, one a line (the `none` slot's body user_id)
          hs256.txt         an HS256 token per buyer, one a line
          hs256.secret      the HMAC key of those tokens (random, base64url, one line)
          ed25519.txt       an EdDSA (Ed25519) token per buyer, header kid "bench-ed25519"
          ed25519-miss.txt  an EdDSA token per miss-* buyer (only when MISS_COUNT > 0)
          jwks.json         the public half of the Ed25519 key (a fresh key every call; the
                            private half is never written)
        Every token: {"sub": buyer, "iat": now, "exp": now + EXP_SECS}. Prints one line of
        key=value pairs (counts, seconds taken, token lengths). Needs the `cryptography`
        package for Ed25519 (HS256 is stdlib); modes/auth.py finds or installs it.
    auth.py statuses BEFORE AFTER
        The POST /api/orders answers by status between two /metrics snapshots (files; BEFORE
        may be missing: counted from zero): "202=123 401=0 ..." (every status seen, always
        202, 401 and 422).
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (the /metrics parser)

KID = "bench-ed25519"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj):
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def mint(outdir, count, miss, exp_secs):
    t0 = time.monotonic()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    now = int(time.time())
    exp = now + exp_secs
    buyers = [f"buyer-{i:06d}" for i in range(1, count + 1)]
    misses = [f"miss-{i:06d}" for i in range(1, miss + 1)]

    secret = b64url(os.urandom(32))
    hs_head = segment({"alg": "HS256", "typ": "JWT"})

    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ed_head = segment({"alg": "EdDSA", "typ": "JWT", "kid": KID})

    def claims(sub):
        return segment({"sub": sub, "iat": now, "exp": exp})

    def hs256(sub):
        signing = f"{hs_head}.{claims(sub)}"
        mac = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
        return f"{signing}.{b64url(mac)}"

    def ed25519(sub):
        signing = f"{ed_head}.{claims(sub)}"
        return f"{signing}.{b64url(key.sign(signing.encode()))}"

    def write(name, lines):
        with open(os.path.join(outdir, name), "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
        return lines

    write("buyers.txt", buyers)
    hs = write("hs256.txt", [hs256(b) for b in buyers])
    ed = write("ed25519.txt", [ed25519(b) for b in buyers])
    if misses:
        write("ed25519-miss.txt", [ed25519(b) for b in misses])
    write("hs256.secret", [secret])
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": KID, "use": "sig", "x": b64url(raw)}]}
    with open(os.path.join(outdir, "jwks.json"), "w", encoding="ascii") as f:
        json.dump(jwks, f, indent=2)
        f.write("\n")
    print(f"buyers={count} miss_buyers={miss} seconds={time.monotonic() - t0:.2f} exp={exp} "
          f"hs256_len={len(hs[0])} ed25519_len={len(ed[0])} distinct={len(set(hs)) + len(set(ed))}")


def order_statuses(path):
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return {}
    out = {}
    for n, lb, v in report.parse_metrics(text):
        if n.endswith("http_requests_total") and lb.get("route") == "POST /api/orders":
            s = lb.get("status", "?")
            out[s] = out.get(s, 0) + v
    return out


def statuses(before, after):
    a, b = order_statuses(before), order_statuses(after)
    if not b:
        raise SystemExit(f"auth.py: no POST /api/orders counts in {after}")
    d = {s: int(b.get(s, 0) - a.get(s, 0)) for s in set(a) | set(b) | {"202", "401", "422"}}
    print(" ".join(f"{s}={d[s]}" for s in sorted(d) if d[s] or s in ("202", "401", "422")))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "mint":
        mint(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "statuses":
        statuses(args[0], args[1])
    else:
        raise SystemExit(f"auth.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
