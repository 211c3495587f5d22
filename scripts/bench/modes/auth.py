"""--auth: what verifying buyers' bearer tokens costs (jwt HS256 and Ed25519 against none).

Owns: a Python with the `cryptography` package for bench/auth.py (python3, /usr/bin/python3
or .data/venv-bench, else made: venv + pip, then apt's python3-cryptography); the token
pools (bench/auth.py mint, once per run); one slot per buyer-auth mode (none, hs256,
ed25519[, ed25519-miss]): a fresh server with only that mode's key set, a probe (buyer 1's
order 202, and 401 without a token in jwt modes), GET /health, POST /api/orders with
bench/orders_auth.lua, and the server's own POST /api/orders statuses during it (no 401 or
422, some 202s); the verdicts: reservations/s of hs256 and of ed25519 >= TARGET x none (the
median of the per-round ratios), printed under the table; a FAIL exits 1; the tables.
"""

import os
import shutil
import statistics
import subprocess

import common
import report
import rounds
from common import Die, LARGE_STOCK, kv, log, uint

NAME = "auth"
FLAG = "--auth"
ARG = None
RUNS = 3
CHART = False
TARGET = 0.95
EXP_SECS = 86400  # lifetime of the minted tokens
VENV = os.path.join(common.REPO_ROOT, ".data", "venv-bench")
CRYPTOGRAPHY = "cryptography==50.0.2"  # pip's pin when .data/venv-bench has to be made
MODES = ("none", "hs256", "ed25519", "ed25519-miss")
NAMES = {
    "none": "`none` (body `user_id`)",
    "hs256": "`jwt` HS256",
    "ed25519": "`jwt` Ed25519",
    "ed25519-miss": "`jwt` Ed25519, cache misses",
}
CACHE_TOKENS = 131072  # src/auth.rs CACHE_TOKENS: verified tokens each worker remembers


def configure(cfg, arg):
    cfg.auth_tokens = uint("BENCH_AUTH_TOKENS", cfg.env.get("BENCH_AUTH_TOKENS", "1000"))
    cfg.auth_miss_tokens = uint("BENCH_AUTH_MISS_TOKENS", cfg.env.get("BENCH_AUTH_MISS_TOKENS", "300000"), 0)
    cfg.auth_bin = cfg.env.get("BENCH_BIN") or None
    if cfg.auth_bin:
        if not (os.path.isfile(cfg.auth_bin) and os.access(cfg.auth_bin, os.X_OK)):
            raise Die(f"BENCH_BIN='{cfg.auth_bin}': not an executable file")
        cfg.auth_bin = os.path.realpath(cfg.auth_bin)
    cfg.auth_slots = list(MODES[:3]) + (["ed25519-miss"] if cfg.auth_miss_tokens else [])


def binary_source(cfg):
    return cfg.auth_bin


def has_cryptography(py):
    exe = shutil.which(py) or py
    return os.access(exe, os.X_OK) and subprocess.run(
        [exe, "-c", "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def auth_python(bench):
    """A Python with the `cryptography` package, found or installed."""
    for py in (bench.py, "/usr/bin/python3", os.path.join(VENV, "bin", "python")):
        if has_cryptography(py):
            return py
    logf = os.path.join(bench.out, "install.log")
    log(f"no python3 with the cryptography package: making {bench.rel(VENV)} with {CRYPTOGRAPHY} "
        f"(log: {bench.rel(logf)})")
    os.makedirs(os.path.dirname(VENV), exist_ok=True)
    pip = os.path.join(VENV, "bin", "pip")

    def venv():
        with open(logf, "a") as f:
            return subprocess.run([bench.py, "-m", "venv", VENV], stdout=f, stderr=f).returncode == 0

    if not os.access(pip, os.X_OK):
        shutil.rmtree(VENV, ignore_errors=True)
        if not venv():
            # Debian's own python3 needs its venv module as a package.
            shutil.rmtree(VENV, ignore_errors=True)
            if bench.apt_install("python3-venv") and not venv():
                shutil.rmtree(VENV, ignore_errors=True)
    if os.access(pip, os.X_OK):
        with open(logf, "a") as f:
            if subprocess.run([pip, "install", "-q", "--disable-pip-version-check", CRYPTOGRAPHY],
                              stdout=f, stderr=f).returncode != 0:
                common.warn(f"pip could not install {CRYPTOGRAPHY} into {bench.rel(VENV)}")
        if has_cryptography(os.path.join(VENV, "bin", "python")):
            return os.path.join(VENV, "bin", "python")
    bench.apt_install("python3-cryptography")
    if has_cryptography("/usr/bin/python3"):
        return "/usr/bin/python3"
    raise Die(f"no Python with the cryptography package could be found or installed (see {logf})")


def prepare(bench):
    """Mints the token pools into OUT/auth (bench/auth.py mint) and reads the HS256 secret."""
    cfg = bench.cfg
    py = auth_python(bench)
    what = f"{cfg.auth_tokens} buyers' HS256 and Ed25519 tokens"
    if cfg.auth_miss_tokens:
        what += f" and {cfg.auth_miss_tokens} other buyers' Ed25519 tokens"
    bench.auth_dir = os.path.join(bench.out, "auth")
    os.makedirs(bench.auth_dir, exist_ok=True)
    log(f"minting {what} (bench/auth.py with {py})")
    r = subprocess.run([py, os.path.join(common.HELPERS, "auth.py"), "mint", bench.auth_dir, str(cfg.auth_tokens),
                        str(cfg.auth_miss_tokens), str(EXP_SECS)], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise Die("bench/auth.py mint failed")
    bench.auth_mint = r.stdout.strip()
    log(f"tokens: {bench.auth_mint}")
    bench.put("auth.mint", bench.auth_mint)
    bench.auth_secret = open(os.path.join(bench.auth_dir, "hs256.secret")).read().strip()
    if cfg.auth_tokens < 1000:
        bench.problem(f"BENCH_AUTH_TOKENS={cfg.auth_tokens}: fewer buyers than the 1,000 the target is stated for")


def after_build(bench):
    cfg = bench.cfg
    if cfg.auth_bin:
        bench.build_info = f"BENCH_BIN {bench.binary_info(cfg.auth_bin, bench.bin)}; {bench.checkout_info()}"
    else:
        bench.build_info = f"{bench.binary_info(bench.rel(common.BUILT_BIN), bench.bin)}, {bench.checkout_info()}"
        if bench.build_secs == 0:
            bench.build_info += " (not rebuilt: BENCH_BUILD=0)"


def measure(bench):
    cfg = bench.cfg
    rs = rounds.Rounds(cfg.auth_slots, cfg.runs).run(lambda md, r, pos, _n: run_slot(bench, md, r, pos))
    n = len(cfg.auth_slots)
    intro = (f"Binary (every slot): {bench.build_info}.\n\n"
             f"Settings: {cfg.runs} round(s) of {n} slots ({' '.join(cfg.auth_slots)} in odd rounds, reversed in "
             f"even ones); each slot a fresh server (own Redis key prefix, io_uring driver, RUST_LOG=flashsale=warn, "
             f"`FLASHSALE_BUYER_AUTH` and only its key set for the slot: `FLASHSALE_JWT_HS256_SECRET` for HS256, "
             f"`FLASHSALE_JWT_PUBLIC_KEYS` (a JWKS file of one Ed25519 key) for Ed25519; no `iss`/`aud`, rate limits "
             f"off; other FLASHSALE_* settings from the environment) with a new product of {LARGE_STOCK} units "
             f"without per-user limit, then `GET /health` and `POST /api/orders` with wrk -t1 -c64 "
             f"-d{cfg.duration}s. Tokens: {bench.auth_mint}.\n\n")
    table = auth_table(rs, cfg)
    cols = []
    for md in cfg.auth_slots:
        cols += report.cpu_columns(md, lambda k, md=md: rs.values(md, k))
    table += "\n\n" + report.cpu_table(cols)
    for md, (verdict, r) in verdicts(rs).items():
        shown = "-" if r is None else f"{r:.3f}"
        log(f"--auth: {md} {verdict} (median reservations/s ÷ none: {shown})")
        if verdict != "PASS":
            bench.fail(f"--auth: {md} {verdict}: median reservations/s ÷ none {shown} (target >= {TARGET:.2f}, no 401/422)")
    return ("## flashsale buyer identity: `jwt` (HS256, Ed25519) against `none`, same binary, alternating",
            intro, table)


def probe(bench, server, mode, product):
    """One order by the pool's first buyer must be a 202, and in the jwt modes one without a
    token a 401 (so the server is in the mode the slot is named after)."""
    f = os.path.join(bench.out, f"probe-{server.label}.txt")
    first = open(bench.auth_file).readline().strip()
    url = server.url("/api/orders")
    ct = ["-H", "Content-Type: application/json"]
    if mode == "none":
        code, _ = common.curl([*ct, "-d", f'{{"product_id":{product},"qty":1,"user_id":"{first}"}}', url], f)
    else:
        code, _ = common.curl([*ct, "-H", f"Authorization: Bearer {first}", "-d",
                               f'{{"product_id":{product},"qty":1}}', url], f)
    if code != "202":
        raise Die(f"[{mode}] the probe order of buyer 1 got {code if code != '000' else 'no answer'}, not 202: "
                  f"{open(f, errors='replace').read()[:300]}")
    if mode != "none":
        code, _ = common.curl([*ct, "-d", f'{{"product_id":{product},"qty":1}}', url], f)
        if code != "401":
            raise Die(f"[{mode}] an order without a bearer token got {code if code != '000' else 'no answer'}, not "
                      f"401: is the server in jwt mode? {open(f, errors='replace').read()[:300]}")
    log(f"[{mode}] probe: buyer 1's order 202{'' if mode == 'none' else ', no token 401'}")


def run_slot(bench, mode, r, pos):
    """One slot: MODE on a fresh server (label MODE-ROUND: own Redis prefix and log) with a
    new large product: the probe, (1), (2) with the mode's pool, the server's statuses of (2)
    checked. Returns the slot's figures."""
    cfg = bench.cfg
    label = f"{mode}-{r}"
    # Only the slot's own key; no iss/aud and no rate limits, whatever the environment says.
    env = dict.fromkeys(("FLASHSALE_JWT_ISSUER", "FLASHSALE_JWT_AUDIENCE", "FLASHSALE_RATE_LIMIT_IP",
                         "FLASHSALE_RATE_LIMIT_IP_BURST", "FLASHSALE_RATE_LIMIT_BUYER",
                         "FLASHSALE_RATE_LIMIT_BUYER_BURST"), "")
    if mode == "none":
        env.update(FLASHSALE_BUYER_AUTH="none", FLASHSALE_JWT_HS256_SECRET="", FLASHSALE_JWT_PUBLIC_KEYS="")
        pool, as_ = "buyers.txt", "user_id"
    elif mode == "hs256":
        env.update(FLASHSALE_BUYER_AUTH="jwt", FLASHSALE_JWT_HS256_SECRET=bench.auth_secret,
                   FLASHSALE_JWT_PUBLIC_KEYS="")
        pool, as_ = "hs256.txt", "bearer"
    elif mode in ("ed25519", "ed25519-miss"):
        env.update(FLASHSALE_BUYER_AUTH="jwt", FLASHSALE_JWT_HS256_SECRET="",
                   FLASHSALE_JWT_PUBLIC_KEYS=os.path.join(bench.auth_dir, "jwks.json"))
        pool, as_ = f"{mode}.txt", "bearer"
    else:
        raise Die(f"unknown --auth mode {mode}")
    bench.auth_file = os.path.join(bench.auth_dir, pool)
    buyers = sum(1 for _ in open(bench.auth_file))
    log(f"[{mode}] round {r}/{cfg.runs}, slot {pos} of {len(cfg.auth_slots)}: FLASHSALE_BUYER_AUTH="
        f"{'none' if mode == 'none' else 'jwt'}, {buyers} buyers ({pool}) as {as_}")
    server = common.serve_fresh(bench, bench.bin, mode, label, env)
    large = bench.new_product(f"bench auth ({mode}, round {r})", LARGE_STOCK)
    probe(bench, server, mode, large)
    data = common.run_health(bench, server, mode, r, cfg.runs)
    before = os.path.join(bench.out, f"metrics-{label}-before.txt")
    with open(before, "w") as f:
        f.write(server.metrics() or "")
    data.update(common.run_orders(bench, server, mode, r, cfg.runs, large, data,
                                  lua=os.path.join(common.HELPERS, "orders_auth.lua"),
                                  lua_env={"BENCH_AUTH_FILE": bench.auth_file, "BENCH_AUTH_AS": as_}))
    server.stop()
    bench.clean_redis_keys(f"{server.prefix}:*")
    p = subprocess.run([bench.py, os.path.join(common.HELPERS, "auth.py"), "statuses", before,
                        os.path.join(bench.out, f"metrics-{label}.txt")], capture_output=True, text=True)
    if p.returncode != 0:
        bench.fail(f"[{mode}] round {r}: the server's POST /api/orders statuses could not be read "
                   f"({(p.stdout + p.stderr).strip()})")
        data["load_statuses"] = "unknown"
        return data
    statuses = p.stdout.strip()
    data["load_statuses"] = statuses
    st = kv(statuses)
    n202, n401, n422 = (int(st.get(c, 0)) for c in ("202", "401", "422"))
    log(f"[{mode}] the server's POST /api/orders answers during the orders run: {statuses}")
    if n401 + n422 > 0:
        bench.fail(f"[{mode}] round {r}: {n401} × 401 and {n422} × 422 among the orders run's answers ({statuses}): "
                   f"buyers refused")
    if n202 == 0:
        bench.fail(f"[{mode}] round {r}: no 202 in the orders run ({statuses})")
    return data


# ------------------------------------------------------------------ report

def per_mode(rs):
    per = {}
    for md in MODES:
        slots = rs.of(md)
        if not slots:
            continue
        cpu_h = report.cpu_per_run([s.get("health.cpu") for s in slots], [s.get("health.rps") for s in slots])
        cpu_o = report.cpu_per_run([s.get("orders.cpu") for s in slots],
                                   [s.get("orders.accepted_rps") for s in slots])
        per[md] = {
            "pos": [s.position for s in slots],
            "health": [s.get("health.rps") for s in slots],
            "res": [s.get("orders.accepted_rps") for s in slots],
            "p99": [s.get("orders.p99") for s in slots],
            "cpu_all": [c["all"] if c else None for c in cpu_o],
            "cpu_srv": [(c["workers"] + c["writer"] + c["server_other"]) if c else None for c in cpu_o],
            "cpu_h": [c["all"] if c else None for c in cpu_h],
            "st": [s.get("load_statuses") or "" for s in slots],
            "other": [(s.get("orders.cpu") or {}).get("other") for s in slots],
        }
    none = per.get("none", {}).get("res", [])
    for md, p in per.items():
        p["ratio"] = [(r / none[i]) if i < len(none) and none[i] else None for i, r in enumerate(p["res"])]
    return per


def at(xs, i):
    return xs[i] if i < len(xs) else None


def med(xs):
    return report.median(xs)


def verdicts(rs):
    """{mode: (verdict, median of the per-round ratios)} for the jwt modes under the target."""
    per = per_mode(rs)
    out = {}
    for md in ("hs256", "ed25519"):
        r = med(per[md]["ratio"]) if md in per else None
        bad = md not in per or any(kv(s).get(c, "0") != "0" for s in per[md]["st"] for c in ("401", "422"))
        out[md] = ("PASS" if r is not None and r >= TARGET and not bad else "FAIL", r)
    return out


def us(x):
    return report.DASH if x is None else f"{x:.1f} µs"


def auth_table(rs, cfg):
    per = per_mode(rs)
    rounds_n = max((len(p["res"]) for p in per.values()), default=0)
    out = []

    def cells(get, md):
        return [report.f_rps(get("health")), report.f_rps(get("res")),
                report.DASH if md == "none" else report.f_x(get("ratio"), 3),
                report.f_ms(get("p99")), us(get("cpu_all")), us(get("cpu_srv")), us(get("cpu_h"))]

    rows = []
    for i in range(rounds_n):
        for md in sorted(per, key=lambda md: at(per[md]["pos"], i) or 9):
            pos = at(per[md]["pos"], i)
            rows.append([str(i + 1), report.DASH if pos is None else f"{pos:.0f}", NAMES[md],
                         *cells(lambda k: at(per[md][k], i), md),
                         (at(per[md]["st"], i) or report.DASH).replace(" ", ", ")])
    n = f"median of {rounds_n}" if rounds_n > 1 else "1 round"
    for md in per:
        rows.append([f"**{n}**", "", f"**{NAMES[md]}**",
                     *(f"**{c}**" for c in cells(lambda k: med(per[md][k]), md)), ""])
    tokens, miss = cfg.auth_tokens, cfg.auth_miss_tokens
    out.append(f"Each slot: a fresh server of the same binary with its own Redis key prefix and a new "
               f"product with large stock and no per-user limit, `GET /health` (the no-op ceiling), then "
               f"`POST /api/orders` qty 1, reservations (202s) counted. Every request of the orders run "
               f"names the next of {tokens:,} buyers in turn (bench/orders_auth.lua): `none` in the "
               f"body's `user_id`, `jwt` in a bearer token (body without `user_id`), one token per buyer, "
               f"so the orders of every mode carry the same user ids into Redis and PostgreSQL. "
               f"÷ none: reservations/s ÷ the `none` slot's of the same round. CPU: all processes' CPU "
               f"time over the middle of each wrk run (bench/cpu.py) per reservation, the server's "
               f"threads' share of it, and per health request. Orders answers: the server's own count "
               f"of `POST /api/orders` statuses during the orders run (/metrics before and after).\n")
    out.append(report.md_table(["round", "slot", "buyer auth", "`GET /health` req/s", "reservations/s",
                                "÷ none", "orders p99", "CPU µs / reservation", "of it the server",
                                "CPU µs / health request", "orders answers"], rows))
    out.append("")
    for md in ("hs256", "ed25519", "ed25519-miss"):
        if md not in per:
            continue
        rs_ = ", ".join(report.DASH if r is None else f"{r:.3f}×" for r in per[md]["ratio"])
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
        out.append(f"- {NAMES[md]}: ÷ none per round {rs_}; each slot's reservations/s ÷ its own health "
                   f"req/s first (machine drift taken out; not the target): {hrs}{extra}.")
    try:
        per_buyer = med(per["ed25519"]["res"]) * cfg.duration / tokens
        each = f" (each buyer sends about {per_buyer:,.0f} in an orders run here)"
    except (KeyError, TypeError, ValueError):
        each = ""
    if tokens <= CACHE_TOKENS:
        out.append(f"- Token pool: {tokens:,} buyers, one HS256 and one Ed25519 token each, sent in turn. It "
                   f"fits the {CACHE_TOKENS:,} verified tokens each worker remembers, so a token's signature is "
                   f"checked once per worker (its first request there: {tokens:,} checks per worker in the "
                   f"first moments of a run) and every later request of that buyer costs a hash lookup of the "
                   f"token: these slots measure buyers repeating requests with their token{each}, not "
                   f"signature checks; the `ed25519-miss` slot shows those.")
    else:
        out.append(f"- Token pool: {tokens:,} buyers, one HS256 and one Ed25519 token each, sent in turn: more "
                   f"than the {CACHE_TOKENS:,} verified tokens each worker remembers, so many requests verify "
                   f"a signature.")
    if "ed25519-miss" in per:
        out.append(f"- Cache misses: a pool of {miss:,} other buyers' Ed25519 tokens, cycled in order. A "
                   f"worker's cache holds {CACHE_TOKENS:,} and is emptied when full, so a token comes back to a "
                   f"worker after it forgot it and nearly every request verifies a signature (every one once "
                   f"the pool ÷ the workers exceeds {CACHE_TOKENS:,}): the cost of each buyer's first request, "
                   f"as if every request came from a new buyer. For information, no target.")
    # Other work on the machine during the orders runs (bench/cpu.py's "other": neither wrk,
    # the server, Redis nor PostgreSQL): a build or test run beside the benchmark shows here.
    others = [(o, i + 1, md) for md in per for i, o in enumerate(per[md]["other"]) if o is not None]
    if others:
        worst = max(others)
        text = (f"- Other processes (not wrk, the server, Redis or PostgreSQL) during the orders runs: "
                f"{statistics.median(o for o, _, _ in others):.0f}% of a core (median of the slots), at most "
                f"{worst[0]:.0f}% (round {worst[1]}, {NAMES[worst[2]]}).")
        if worst[0] > 10:
            busy = sorted(f"round {r} {md} {o:.0f}%" for o, r, md in others if o > 10)
            text += (f" **Other work shared the cores** in {len(busy)} slot(s) ({', '.join(busy)}): their "
                     f"figures are lower by it; run again on a quiet machine before reading small differences.")
        out.append(text)
    out.append("")
    for md, (verdict, r) in verdicts(rs).items():
        out.append(f"**{verdict}** {NAMES[md]}: median of the per-round ratios "
                   f"{report.DASH if r is None else f'{r:.3f}×'} (target ≥ {TARGET:.2f}× `none`"
                   f"; no 401 or 422 in its orders runs).  ")
    return "\n".join(out)
