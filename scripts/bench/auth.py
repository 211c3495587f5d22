#!/usr/bin/env python3
"""Buyer tokens and the report of scripts/bench.sh --auth.

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
        package for Ed25519 (HS256 is stdlib); bench.sh finds or installs it.
    auth.py statuses BEFORE AFTER
        The POST /api/orders answers by status between two /metrics snapshots (files; BEFORE
        may be missing: counted from zero): "202=123 401=0 ..." (every status seen, always
        202, 401 and 422).
    auth.py table TSV
        The Markdown tables of a --auth run from bench.sh's measurements.
    auth.py verdicts TSV
        One line per jwt mode: "MODE PASS|FAIL MEDIAN_RATIO" (against TARGET below).

TSV keys (per mode: none, hs256, ed25519, ed25519-miss; a key written once per round
accumulates into a comma-separated list, see report.py): MODE.position, MODE.health.rps,
MODE.orders.accepted_rps, MODE.orders.p99, MODE.health.cpu, MODE.orders.cpu,
MODE.load_statuses; auth.tokens, auth.miss_tokens, auth.mint.
"""

import base64
import hashlib
import hmac
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (the helpers of the other modes: TSV loading, formatting, CPU)

TARGET = 0.90
KID = "bench-ed25519"
MODES = ("none", "hs256", "ed25519", "ed25519-miss")
NAMES = {
    "none": "`none` (body `user_id`)",
    "hs256": "`jwt` HS256",
    "ed25519": "`jwt` Ed25519",
    "ed25519-miss": "`jwt` Ed25519, cache misses",
}
CACHE_TOKENS = 16384  # src/auth.rs CACHE_TOKENS: verified tokens each worker remembers


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


# ------------------------------------------------------------------ report

def kv(text):
    return {k: v for k, _, v in (w.partition("=") for w in (text or "").split()) if k}


def per_mode(m):
    per = {}
    for md in MODES:
        res = m.nums(f"{md}.orders.accepted_rps")
        if not res:
            continue
        cpu_h = report.cpu_per_run(m, f"{md}.health.cpu", f"{md}.health.rps")
        cpu_o = report.cpu_per_run(m, f"{md}.orders.cpu", f"{md}.orders.accepted_rps")
        per[md] = {
            "pos": m.nums(f"{md}.position"),
            "health": m.nums(f"{md}.health.rps"),
            "res": res,
            "p99": m.nums(f"{md}.orders.p99"),
            "cpu_all": [c["all"] if c else None for c in cpu_o],
            "cpu_srv": [(c["workers"] + c["writer"] + c["server_other"]) if c else None for c in cpu_o],
            "cpu_h": [c["all"] if c else None for c in cpu_h],
            "st": (m.raw(f"{md}.load_statuses") or "").split(","),
        }
    none = per.get("none", {}).get("res", [])
    for md, p in per.items():
        p["ratio"] = [(r / none[i]) if i < len(none) and none[i] else None for i, r in enumerate(p["res"])]
    return per


def at(xs, i):
    return xs[i] if i < len(xs) else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def verdicts(m):
    """{mode: (verdict, median of the per-round ratios)} for the jwt modes under the target."""
    per = per_mode(m)
    out = {}
    for md in ("hs256", "ed25519"):
        r = med(per[md]["ratio"]) if md in per else None
        bad = md not in per or any(kv(s).get(c, "0") != "0" for s in per[md]["st"] for c in ("401", "422"))
        out[md] = ("PASS" if r is not None and r >= TARGET and not bad else "FAIL", r)
    return out


def us(x):
    return report.DASH if x is None else f"{x:.1f} µs"


def table(path):
    m = report.M(report.load(path))
    per = per_mode(m)
    rounds = max((len(p["res"]) for p in per.values()), default=0)

    def cells(get, md):
        return [report.f_rps(get("health")), report.f_rps(get("res")),
                report.DASH if md == "none" else report.f_x(get("ratio"), 3),
                report.f_ms(get("p99")), us(get("cpu_all")), us(get("cpu_srv")), us(get("cpu_h"))]

    rows = []
    for i in range(rounds):
        for md in sorted(per, key=lambda md: at(per[md]["pos"], i) or 9):
            pos = at(per[md]["pos"], i)
            rows.append([str(i + 1), report.DASH if pos is None else f"{pos:.0f}", NAMES[md],
                         *cells(lambda k: at(per[md][k], i), md),
                         (at(per[md]["st"], i) or report.DASH).replace(" ", ", ")])
    n = f"median of {rounds}" if rounds > 1 else "1 round"
    for md in per:
        rows.append([f"**{n}**", "", f"**{NAMES[md]}**",
                     *(f"**{c}**" for c in cells(lambda k: med(per[md][k]), md)), ""])
    tokens = m.raw("auth.tokens") or "?"
    miss = m.raw("auth.miss_tokens") or "0"
    print(f"Each slot: a fresh server of the same binary with its own Redis key prefix and a new "
          f"product with large stock and no per-user limit, `GET /health` (the no-op ceiling), then "
          f"`POST /api/orders` qty 1, reservations (202s) counted. Every request of the orders run "
          f"names the next of {int(tokens):,} buyers in turn (bench/orders_auth.lua): `none` in the "
          f"body's `user_id`, `jwt` in a bearer token (body without `user_id`), one token per buyer, "
          f"so the orders of every mode carry the same user ids into Redis and PostgreSQL. "
          f"÷ none: reservations/s ÷ the `none` slot's of the same round. CPU: all processes' CPU "
          f"time over the middle of each wrk run (bench/cpu.py) per reservation, the server's "
          f"threads' share of it, and per health request. Orders answers: the server's own count "
          f"of `POST /api/orders` statuses during the orders run (/metrics before and after).\n")
    print(report.md_table(["round", "slot", "buyer auth", "`GET /health` req/s", "reservations/s",
                           "÷ none", "orders p99", "CPU µs / reservation", "of it the server",
                           "CPU µs / health request", "orders answers"], rows))
    print()
    for md in ("hs256", "ed25519", "ed25519-miss"):
        if md not in per:
            continue
        rs = ", ".join(report.DASH if r is None else f"{r:.3f}×" for r in per[md]["ratio"])
        # The same ratio with each slot's reservations/s divided by its own health req/s first:
        # what is left when a slot's whole machine was slower or faster (noise), not the target.
        none = per.get("none", {})
        hr = []
        for i, r in enumerate(per[md]["res"]):
            h, nr, nh = at(per[md]["health"], i), at(none.get("res", []), i), at(none.get("health", []), i)
            hr.append(r / h / (nr / nh) if h and nr and nh else None)
        hrs = ", ".join(report.DASH if r is None else f"{r:.3f}×" for r in hr)
        cpu = med(per[md]["cpu_all"])
        base = med(none.get("cpu_all", []))
        srv, srv0 = med(per[md]["cpu_srv"]), med(none.get("cpu_srv", []))
        extra = ("" if cpu is None or base is None else
                 f"; CPU per reservation {cpu - base:+.1f} µs against `none` (medians), of it the server "
                 f"{report.DASH if srv is None or srv0 is None else f'{srv - srv0:+.1f} µs'}")
        print(f"- {NAMES[md]}: ÷ none per round {rs}; each slot's reservations/s ÷ its own health "
              f"req/s first (machine drift taken out; not the target): {hrs}{extra}.")
    ntok = int(tokens)
    try:
        per_buyer = med(per["ed25519"]["res"]) * float(m.raw("duration")) / ntok
        each = f" (each buyer sends about {per_buyer:,.0f} in an orders run here)"
    except (KeyError, TypeError, ValueError):
        each = ""
    if ntok <= CACHE_TOKENS:
        print(f"- Token pool: {ntok:,} buyers, one HS256 and one Ed25519 token each, sent in turn. It "
              f"fits the {CACHE_TOKENS:,} verified tokens each worker remembers, so a token's signature is "
              f"checked once per worker (its first request there: {ntok:,} checks per worker in the "
              f"first moments of a run) and every later request of that buyer costs a hash lookup of the "
              f"token: these slots measure buyers repeating requests with their token{each}, not "
              f"signature checks; the `ed25519-miss` slot shows those.")
    else:
        print(f"- Token pool: {ntok:,} buyers, one HS256 and one Ed25519 token each, sent in turn: more "
              f"than the {CACHE_TOKENS:,} verified tokens each worker remembers, so many requests verify "
              f"a signature.")
    if "ed25519-miss" in per:
        print(f"- Cache misses: a pool of {int(miss):,} other buyers' Ed25519 tokens, cycled in order. A "
              f"worker's cache holds {CACHE_TOKENS:,} and is emptied when full, so a token comes back to a "
              f"worker after it forgot it and nearly every request verifies a signature (every one once "
              f"the pool ÷ the workers exceeds {CACHE_TOKENS:,}): the cost of each buyer's first request, "
              f"as if every request came from a new buyer. For information, no target.")
    # Other work on the machine during the orders runs (bench/cpu.py's "other": neither wrk,
    # the server, Redis nor PostgreSQL): a build or test run beside the benchmark shows here.
    others = []
    for md in per:
        for i, line in enumerate((m.raw(f"{md}.orders.cpu") or "").split(",")):
            o = kv(line.replace(";", " ")).get("other")
            try:
                others.append((float(o), i + 1, md))
            except (TypeError, ValueError):
                pass
    if others:
        worst = max(others)
        text = (f"- Other processes (not wrk, the server, Redis or PostgreSQL) during the orders runs: "
                f"{statistics.median(o for o, _, _ in others):.0f}% of a core (median of the slots), at most "
                f"{worst[0]:.0f}% (round {worst[1]}, {NAMES[worst[2]]}).")
        if worst[0] > 10:
            busy = sorted(f"round {r} {md} {o:.0f}%" for o, r, md in others if o > 10)
            text += (f" **Other work shared the cores** in {len(busy)} slot(s) ({', '.join(busy)}): their "
                     f"figures are lower by it; run again on a quiet machine before reading small differences.")
        print(text)
    print()
    v = verdicts(m)
    for md, (verdict, r) in v.items():
        print(f"**{verdict}** {NAMES[md]}: median of the per-round ratios "
              f"{report.DASH if r is None else f'{r:.3f}×'} (target ≥ {TARGET:.2f}× `none`"
              f"; no 401 or 422 in its orders runs).  ")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "mint":
        mint(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "statuses":
        statuses(args[0], args[1])
    elif cmd == "table":
        table(args[0])
    elif cmd == "verdicts":
        for md, (verdict, r) in verdicts(report.M(report.load(args[0]))).items():
            print(f"{md} {verdict} {'-' if r is None else f'{r:.3f}'}")
    else:
        raise SystemExit(f"auth.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
