#!/usr/bin/env python3
"""Parsing, table and chart helpers for scripts/bench.sh.

    report.py wrk FILE          -> "rps p50_ms p99_ms requests non2xx socket_errors"
    report.py ab FILE           -> "rps p50_ms p99_ms complete failed non2xx keepalive"
    report.py metrics FILE PREFIX -> key facts of a /metrics snapshot as TSV lines (FILE - = stdin)
    report.py metrics-brief FILE  -> the same facts on one line
    report.py table TSV         -> the Markdown results table (stdout)
    report.py cpu-table TSV [KEY...] -> CPU per request, one column pair per KEY
                                   (default: io_uring epoll)
    report.py compare-table TSV -> the Markdown table of a --compare run (KEYs old and new)
    report.py soak-table TSV    -> the Markdown table of a --soak run (stdout)
    report.py chart TSV PNG     -> throughput and latency chart (needs matplotlib)
    report.py soak-chart TSV RSS_TSV PNG -> RSS over time of a --soak run

TSV is the measurements file bench.sh writes: one `key<TAB>value` a line; a value with
commas is a list (one item per run). Missing keys print as "—".
"""

import re
import statistics
import sys

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
LARAVEL_RPS = 933.0


# ------------------------------------------------------------------ parsing

def dur_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unknown duration {text!r}")
    return float(m.group(1)) * UNITS_MS[m.group(2)]


def count(text):
    """wrk prints large counts as plain integers; be lenient with 1.23k style too."""
    m = re.fullmatch(r"([0-9.]+)([kMG]?)", text.strip())
    if not m:
        raise ValueError(f"unknown count {text!r}")
    return int(float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[m.group(2)])


def parse_wrk(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    req = re.search(r"^\s+(\S+) requests in", text, re.M)
    if not (rps and p50 and p99 and req):
        raise SystemExit(f"report.py: cannot parse wrk output {path}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    sockerr = sum(int(x) for x in sock.groups()) if sock else 0
    return [
        f"{float(rps.group(1)):.2f}",
        f"{dur_ms(p50.group(1)):.4f}",
        f"{dur_ms(p99.group(1)):.4f}",
        str(count(req.group(1))),
        non2xx.group(1) if non2xx else "0",
        str(sockerr),
    ]


def parse_ab(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    rps = re.search(r"^Requests per second:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\d+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\d+)", text, re.M)
    done = re.search(r"^Complete requests:\s+(\d+)", text, re.M)
    failed = re.search(r"^Failed requests:\s+(\d+)", text, re.M)
    non2xx = re.search(r"^Non-2xx responses:\s+(\d+)", text, re.M)
    keepalive = re.search(r"^Keep-Alive requests:\s+(\d+)", text, re.M)
    if not (rps and p50 and p99 and done):
        raise SystemExit(f"report.py: cannot parse ab output {path}")
    return [
        f"{float(rps.group(1)):.2f}",
        p50.group(1),
        p99.group(1),
        done.group(1),
        failed.group(1) if failed else "0",
        non2xx.group(1) if non2xx else "0",
        keepalive.group(1) if keepalive else "0",
    ]


def parse_metrics(text):
    """Prometheus text -> list of (name, {label: value}, float)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return out


def metrics_summary(path, prefix):
    """Key facts from a /metrics snapshot, as measurement lines under PREFIX."""
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8", errors="replace").read()
    ms = parse_metrics(text)

    def one(name):
        vals = [v for n, _, v in ms if n == name]
        return sum(vals) if vals else None

    statuses = {}
    for n, lb, v in ms:
        if n.endswith("http_requests_total") and lb.get("route") == "POST /api/orders" and v:
            statuses[lb.get("status", "?")] = statuses.get(lb.get("status", "?"), 0) + v
    reasons = {lb.get("reason", "?"): v for n, lb, v in ms
               if n.endswith("unavailable_responses_total") and v}
    lines = []
    if statuses:
        st = ", ".join(f"{k}×{int(v):,}" for k, v in sorted(statuses.items()))
        if reasons:
            st += " (503: " + ", ".join(f"{k} {int(v):,}" for k, v in sorted(reasons.items())) + ")"
        calls = one("flashsale_reserve_calls_total")
        decided = sum(v for k, v in statuses.items() if k in ("202", "409"))
        if calls:
            st += f"; {int(calls):,} reserve.lua calls ({decided / calls:.1f} requests per call)"
        lines.append((f"{prefix}.statuses", st))
    rows, batches = one("flashsale_writer_rows_total"), one("flashsale_writer_batch_rows_count")
    commit = one("flashsale_writer_commit_seconds_sum")
    if rows is not None and batches:
        lines.append((f"{prefix}.writer",
                      f"{int(rows):,} rows in {int(batches):,} transactions "
                      f"({rows / batches:,.0f} rows, {1000 * (commit or 0) / batches:.1f} ms per commit)"))
    pending = one("flashsale_reaper_pending")
    if pending is not None:
        lines.append((f"{prefix}.reaper_pending", str(int(pending))))
    return lines


# --------------------------------------------------------------- formatting

def load(path):
    d = {}
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if "\t" in line:
            k, v = line.split("\t", 1)
            # A key written once per run accumulates into a comma-separated list.
            d[k] = d[k] + "," + v if k in d else v
    return d


class M:
    """Typed access to the measurements."""

    def __init__(self, d):
        self.d = d

    def raw(self, k):
        return self.d.get(k)

    def nums(self, k):
        v = self.d.get(k)
        if v is None or v == "":
            return []
        return [float(x) for x in v.split(",") if x != ""]

    def med(self, k):
        xs = self.nums(k)
        return statistics.median(xs) if xs else None

    def total(self, k):
        xs = self.nums(k)
        return int(sum(xs)) if xs else None


DASH = "—"


def f_rps(x):
    return DASH if x is None else f"{x:,.0f}"


def f_ms(x):
    if x is None:
        return DASH
    if x >= 100:
        return f"{x:,.0f} ms"
    if x >= 10:
        return f"{x:.1f} ms"
    if x >= 1:
        return f"{x:.2f} ms"
    return f"{x:.3f} ms"


def f_int(x):
    return DASH if x is None else f"{int(x):,}"


def f_ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return DASH
    return f"{a / b:.{digits}f}×"


def f_x(x, digits=2):
    return DASH if x is None else f"{x:.{digits}f}×"


def f_mib(kb):
    return DASH if kb is None else f"{kb / 1024:.1f} MiB"


def runs_note(m, k, fmt):
    xs = m.nums(k)
    if len(xs) <= 1:
        return ""
    return "runs: " + ", ".join(fmt(x) for x in xs)


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def table(path):
    m = M(load(path))
    runs = m.raw("runs") or "1"
    dur = m.raw("duration") or "?"
    drivers = ["io_uring", "epoll"]
    rows = []

    def both(fn):
        return [fn(dv) for dv in drivers]

    def runs_notes(suffix, fmt):
        """Each driver's single runs of `<driver>.<suffix>`, when there were several."""
        if runs == "1":
            return ""
        return "; ".join(f"{dv} " + runs_note(m, f"{dv}.{suffix}", fmt) for dv in drivers)

    med_n = f"median of {runs}" if runs != "1" else "1 run"
    rows.append(["1. `GET /health` (wrk -t1 -c64 -d%ss)" % dur, "req/s (%s)" % med_n,
                 *both(lambda dv: f_rps(m.med(f"{dv}.health.rps"))),
                 runs_notes("health.rps", f_rps)])
    rows.append(["", "p50 / p99",
                 *both(lambda dv: f"{f_ms(m.med(f'{dv}.health.p50'))} / {f_ms(m.med(f'{dv}.health.p99'))}"),
                 "non-2xx: " + " / ".join(f_int(m.total(f"{dv}.health.non2xx")) for dv in drivers)
                 + "; socket errors: " + " / ".join(f_int(m.total(f"{dv}.health.sockerr")) for dv in drivers)])
    rows.append(["2. `POST /api/orders` qty 1, large product (wrk -t1 -c64 -d%ss)" % dur,
                 "req/s (%s)" % med_n,
                 *both(lambda dv: f_rps(m.med(f"{dv}.orders.rps"))),
                 runs_notes("orders.rps", f_rps)])
    rows.append(["", "reservations/s: 202s only (%s)" % med_n,
                 *both(lambda dv: f_rps(m.med(f"{dv}.orders.accepted_rps"))),
                 runs_notes("orders.accepted_rps", f_rps)])
    rows.append(["", "p50 / p99",
                 *both(lambda dv: f"{f_ms(m.med(f'{dv}.orders.p50'))} / {f_ms(m.med(f'{dv}.orders.p99'))}"), ""])
    rows.append(["", "reservations/s ÷ (1) req/s (%s)" % med_n,
                 *both(lambda dv: f_x(m.med(f"{dv}.ratio"))),
                 "; ".join(x for x in ["each run against the health run just before it",
                                       runs_notes("ratio", f_x)] if x)])
    rows.append(["", "p99 ÷ (1) p99 (%s)" % med_n,
                 *both(lambda dv: f_x(m.med(f"{dv}.p99_ratio"), 1)), ""])
    rows.append(["", "non-2xx responses (all runs)",
                 *both(lambda dv: f_int(m.total(f"{dv}.orders.non2xx"))),
                 "expected 0; POST /api/orders statuses over the whole server run: "
                 + "; ".join(f"{dv} {m.raw(f'{dv}.m.statuses') or DASH}" for dv in drivers)
                 + "; socket errors: " + " / ".join(f_int(m.total(f"{dv}.orders.sockerr")) for dv in drivers)])
    rows.append(["3. PostgreSQL lag after (2): wrk end → journal empty and row count stable",
                 "time (%s)" % med_n,
                 *both(lambda dv: f_ms(m.med(f"{dv}.lag.ms"))),
                 "; ".join(x for x in [
                     "io_uring " + runs_note(m, "io_uring.lag.ms", f_ms) if runs != "1" else "",
                     "epoll " + runs_note(m, "epoll.lag.ms", f_ms) if runs != "1" else "",
                     "polled every 10 ms"] if x)])
    rows.append(["", "order rows added / 202s counted by wrk (all runs)",
                 *both(lambda dv: f"{f_int(m.total(f'{dv}.lag.added'))} / {f_int(m.total(f'{dv}.lag.accepted'))}"),
                 "rows ≥ 202s: requests cut off when wrk stops can still reserve; Redis journal at wrk end: "
                 + "; ".join(f"{dv} " + ", ".join(f_int(x) for x in m.nums(f"{dv}.lag.journal")) for dv in drivers)])
    rows.append(["", "PostgreSQL writer (server /metrics, whole server run)",
                 *both(lambda dv: m.raw(f"{dv}.m.writer") or DASH), ""])
    verdict = m.raw("sellout.verdict") or DASH
    rows.append(["5. sell-out: fresh 10,000-unit product (wrk -t1 -c256 -d%ss)" % dur, "verdict",
                 f"**{verdict}**", DASH,
                 f"units in orders: {f_int(m.med('sellout.sum_qty'))} (want 10,000); Redis stock: "
                 f"{m.raw('sellout.redis_stock') or DASH} (want 0); 202s counted by wrk: "
                 f"{f_int(m.med('sellout.accepted'))}; drained in {f_ms(m.med('sellout.lag_ms'))}"])
    rows.append(["", "req/s, p50 / p99",
                 f"{f_rps(m.med('sellout.rps'))}, {f_ms(m.med('sellout.p50'))} / {f_ms(m.med('sellout.p99'))}",
                 DASH,
                 f"{f_int(m.med('sellout.requests'))} requests, {f_int(m.med('sellout.non2xx'))} non-2xx "
                 f"(409 once sold out); socket errors: {f_int(m.med('sellout.sockerr'))}"])
    ab_rps = m.med("ab.rps")
    rows.append(["6. reference command `ab -n 1000 -c 100 -k -p body.json -T application/json`",
                 "req/s", f_rps(ab_rps), DASH,
                 f"{f_ratio(ab_rps, LARAVEL_RPS, 1)} the reference Laravel service (933 req/s); "
                 f"p50 / p99 {f_ms(m.med('ab.p50'))} / {f_ms(m.med('ab.p99'))}; "
                 f"failed {f_int(m.med('ab.failed'))}, non-2xx {f_int(m.med('ab.non2xx'))}"])
    rows.append(["7. server RSS (VmRSS)", "idle after start",
                 *both(lambda dv: f_mib(m.med(f"{dv}.rss.idle_kb"))), ""])
    rows.append(["", "after the load",
                 *both(lambda dv: f_mib(m.med(f"{dv}.rss.after_kb"))),
                 "io_uring: after (1), (2), (5), (6); epoll: after (1), (2); entries in the expiry timer "
                 "wheels then (one per reserve call, which holds a batch of reservations): "
                 + " / ".join(f_int(m.med(f"{dv}.after.reaper_pending")) for dv in drivers)])
    conns = m.raw("idle_conns") or "10000"
    rows.append(["", f"with {int(conns):,} idle keep-alive connections",
                 *both(lambda dv: f_mib(m.med(f"{dv}.rss.conns_kb"))),
                 "opened / failed / still open at the end: "
                 + "; ".join(f"{dv} {f_int(m.med(f'{dv}.conns.open'))} / {f_int(m.med(f'{dv}.conns.failed'))}"
                             f" / {f_int(m.med(f'{dv}.conns.still_open'))}" for dv in drivers)])
    rows.append(["", "`GET /health` while they are open",
                 *both(lambda dv: m.raw(f"{dv}.conns.health") or DASH), "status and time of one curl"])
    rows.append(["", "I/O driver check", *both(lambda dv: m.raw(f"{dv}.driver") or DASH),
                 "io_uring instances in /proc/PID/fd"])
    print(md_table(["Scenario", "Metric", "io_uring (default)", "legacy epoll", "Notes"], rows))


CPU_GROUPS = [
    ("wrk", "wrk (the load generator)"),
    ("workers", "server: fs-worker threads"),
    ("writer", "server: pg-writer thread"),
    ("server_other", "server: other threads"),
    ("redis", "redis-server"),
    ("postgres", "PostgreSQL (all processes)"),
    ("other", "everything else"),
]


def cpu_per_run(m, key, rps_key):
    """Per run: {group: µs of CPU per request} from cpu.py's percentages and the run's rate,
    plus "idle" as a percentage of all cores; None for a run whose sample failed."""
    lines = (m.raw(key) or "").split(",")
    rates = m.nums(rps_key)
    runs = []
    for line, rps in zip(lines, rates):
        try:
            pct = {g: float(v) for g, v in (kv.split("=") for kv in line.split(";") if kv)}
        except ValueError:
            pct = None  # a failed sample (its error text)
        if pct is None or rps <= 0:
            runs.append(None)
            continue
        us = {g: pct.get(g, 0.0) / 100 / rps * 1e6 for g, _ in CPU_GROUPS}
        us["all"] = sum(us[g] for g, _ in CPU_GROUPS)
        cores = (sum(pct.values())) / 100 or 1
        us["idle"] = pct.get("idle", 0.0) / cores
        runs.append(us)
    return runs


def cpu_runs(m, key, rps_key):
    """cpu_per_run without the failed samples."""
    return [r for r in cpu_per_run(m, key, rps_key) if r is not None]


def cpu_table(path, keys=("io_uring", "epoll")):
    m = M(load(path))
    cols = []
    for dv in keys:
        cols.append((f"{dv}: `GET /health`", cpu_runs(m, f"{dv}.health.cpu", f"{dv}.health.rps")))
        cols.append((f"{dv}: `POST /api/orders`",
                     cpu_runs(m, f"{dv}.orders.cpu", f"{dv}.orders.accepted_rps")))

    def med(runs, g):
        xs = [r[g] for r in runs]
        return statistics.median(xs) if xs else None

    def us(x):
        return DASH if x is None else f"{x:.1f} µs"

    rows = [[label, *(us(med(runs, g)) for _, runs in cols)] for g, label in CPU_GROUPS]
    rows.append(["**all processes**", *(f"**{us(med(runs, 'all'))}**" for _, runs in cols)])
    rows.append(["idle, share of all cores",
                 *(DASH if med(runs, "idle") is None else f"{med(runs, 'idle'):.0f}%"
                   for _, runs in cols)])
    print("CPU per request (per reservation for orders): CPU time of each process over the middle of "
          "each wrk run (/proc, from 1 s after its start to 1 s before its end) divided by the "
          "requests of that run; medians of the runs. The ratio of reservations/s to health "
          "req/s is roughly the inverse ratio of the two 'all processes' figures, times the "
          "ratio of the busy shares.\n")
    print(md_table(["CPU per request", *(c for c, _ in cols)], rows))


def soak_table(path):
    m = M(load(path))
    r1, rend = m.med("soak.rss_1min_kb"), m.med("soak.rss_end_kb")
    rows = [
        ["load", m.raw("soak.load") or DASH],
        ["server settings", m.raw("soak.settings") or DASH],
        ["req/s", f_rps(m.med("soak.rps"))],
        ["p50 / p99", f"{f_ms(m.med('soak.p50'))} / {f_ms(m.med('soak.p99'))}"],
        ["requests / non-2xx", f"{f_int(m.med('soak.requests'))} / {f_int(m.med('soak.non2xx'))}"],
        ["server /metrics: POST /api/orders statuses; writer", m.raw("soak.statuses") or DASH],
        ["RSS idle after start", f_mib(m.med("soak.rss_idle_kb"))],
        ["RSS after 1 minute", f_mib(r1)],
        ["RSS at the end", f_mib(rend)],
        ["RSS max during the run", f_mib(m.med("soak.rss_max_kb"))],
        ["RSS end ÷ RSS after 1 minute", f_ratio(rend, r1, 3)],
        ["order rows in PostgreSQL after drain", f_int(m.med("soak.rows"))],
    ]
    print(md_table(["Soak (memory flatness)", "Value"], rows))


def compare_table(path):
    """--compare: one row per slot (round, binary), the medians per binary, NEW ÷ OLD."""
    m = M(load(path))
    names = {"old": "OLD", "new": "NEW"}
    per = {}
    for b in names:
        cpu_h = cpu_per_run(m, f"{b}.health.cpu", f"{b}.health.rps")
        cpu_o = cpu_per_run(m, f"{b}.orders.cpu", f"{b}.orders.accepted_rps")
        per[b] = {
            "pos": m.nums(f"{b}.position"),
            "health": m.nums(f"{b}.health.rps"),
            "res": m.nums(f"{b}.orders.accepted_rps"),
            "ratio": m.nums(f"{b}.ratio"),
            "p99": m.nums(f"{b}.orders.p99"),
            "cpu_h": [c["all"] if c else None for c in cpu_h],
            "cpu_o": [c["all"] if c else None for c in cpu_o],
        }

    def at(b, k, i):
        xs = per[b][k]
        return xs[i] if i < len(xs) else None

    def med(b, k):
        xs = [x for x in per[b][k] if x is not None]
        return statistics.median(xs) if xs else None

    def us(x):
        return DASH if x is None else f"{x:.1f}"

    def cells(get):
        """health, reservations/s, ratio, p99, CPU µs health / reservation, from get(key)."""
        return [f_rps(get("health")), f_rps(get("res")), f_x(get("ratio"), 3), f_ms(get("p99")),
                f"{us(get('cpu_h'))} / {us(get('cpu_o'))}"]

    rows = []
    rounds = max(len(per[b]["res"]) for b in names)
    for i in range(rounds):
        order = sorted(names, key=lambda b: at(b, "pos", i) or 9)
        for b in order:
            pos = at(b, "pos", i)
            rows.append([str(i + 1), DASH if pos is None else f"{pos:.0f}", names[b],
                         *cells(lambda k: at(b, k, i))])
    n = f"median of {rounds}" if rounds > 1 else "1 round"
    for b in names:
        rows.append([f"**{n}**", "", f"**{names[b]}**", *(f"**{c}**" for c in cells(lambda k: med(b, k)))])

    def quot(k, digits=3):
        return f_ratio(med("new", k), med("old", k), digits)

    rows.append(["**NEW ÷ OLD** (of the medians)", "", "",
                 quot("health"), f"**{quot('res')}**", f"**{quot('ratio')}**", quot("p99"),
                 f"{quot('cpu_h')} / {quot('cpu_o')}"])
    print("Each slot: a fresh server, `GET /health` (the no-op ceiling) then `POST /api/orders`; "
          "ratio = that slot's reservations/s ÷ its health req/s. CPU: all processes' CPU time "
          "over the middle of each wrk run (bench/cpu.py) per health request / per reservation.\n")
    print(md_table(["round", "slot", "binary", "`GET /health` req/s", "reservations/s", "ratio",
                    "orders p99", "CPU µs per request / reservation"], rows))

    def paired(k):
        qs = []
        for i in range(rounds):
            a, b = at("old", k, i), at("new", k, i)
            qs.append(DASH if not a or b is None else f"{b / a:.3f}×")
        return ", ".join(qs)

    def spread(b, k, fmt):
        xs = per[b][k]
        return f"{fmt(min(xs))}–{fmt(max(xs))}" if xs else DASH

    print(f"\nNEW ÷ OLD within each round: reservations/s {paired('res')}; ratio {paired('ratio')}. "
          f"Single slots range: reservations/s OLD {spread('old', 'res', f_rps)}, "
          f"NEW {spread('new', 'res', f_rps)}; ratio OLD {spread('old', 'ratio', lambda x: f_x(x, 3))}, "
          f"NEW {spread('new', 'ratio', lambda x: f_x(x, 3))}.")


# -------------------------------------------------------------------- chart

def chart(path, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = M(load(path))
    bars = []  # (label, rps, p50, p99)
    for dv in ("io_uring", "epoll"):
        for sc, label in (("health", "GET /health"), ("orders", "POST /api/orders")):
            bars.append((f"{label}\n{dv}", m.med(f"{dv}.{sc}.rps"),
                         m.med(f"{dv}.{sc}.p50"), m.med(f"{dv}.{sc}.p99")))
    bars.append(("sell-out\n-c256 io_uring", m.med("sellout.rps"), m.med("sellout.p50"), m.med("sellout.p99")))
    bars.append(("ab -c100 -k\nio_uring", m.med("ab.rps"), m.med("ab.p50"), m.med("ab.p99")))
    bars = [b for b in bars if b[1] is not None]

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8.5))
    labels = [b[0] for b in bars]
    xs = range(len(bars))
    colors = ["#4C72B0" if "io_uring" in lbl else "#DD8452" for lbl in labels]
    rects = ax1.bar(xs, [b[1] for b in bars], color=colors)
    ax1.bar_label(rects, labels=[f"{b[1]:,.0f}" for b in bars], fontsize=8)
    ax1.axhline(LARAVEL_RPS, color="grey", linestyle="--", linewidth=1)
    ax1.text(-0.5, LARAVEL_RPS, " reference Laravel: 933 req/s", ha="left", va="bottom",
             fontsize=8, color="grey")
    ax1.set_xticks(list(xs), labels, fontsize=8)
    ax1.set_ylabel("requests / s")
    n = int(m.raw("runs") or 1)
    ax1.set_title("flashsale throughput" + (f" (wrk scenarios: median of {n} runs)" if n > 1 else ""))

    w = 0.38
    r50 = ax2.bar([x - w / 2 for x in xs], [b[2] or 0 for b in bars], w, label="p50")
    r99 = ax2.bar([x + w / 2 for x in xs], [b[3] or 0 for b in bars], w, label="p99")
    ax2.bar_label(r50, labels=[f"{b[2]:.2f}" if b[2] is not None else "" for b in bars], fontsize=7)
    ax2.bar_label(r99, labels=[f"{b[3]:.2f}" if b[3] is not None else "" for b in bars], fontsize=7)
    ax2.set_xticks(list(xs), labels, fontsize=8)
    ax2.set_ylabel("latency (ms)")
    ax2.set_yscale("log")
    ax2.set_title("latency p50 / p99 (log scale; ab reports whole milliseconds)")
    ax2.legend()
    fig.text(0.01, 0.005, m.raw("machine") or "", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(png, dpi=110)


def soak_chart(path, rss_tsv, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = M(load(path))
    ts, rss = [], []
    for line in open(rss_tsv, encoding="utf-8"):
        parts = line.split()
        if len(parts) >= 2 and parts[0][0].isdigit():
            ts.append(float(parts[0]))
            rss.append(float(parts[1]) / 1024)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(ts, rss, marker="o", markersize=3)
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("server VmRSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title("flashsale soak: RSS under sustained overload (" + (m.raw("soak.load") or "") + ")")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "wrk":
        print(" ".join(parse_wrk(args[0])))
    elif cmd == "ab":
        print(" ".join(parse_ab(args[0])))
    elif cmd == "metrics":
        for k, v in metrics_summary(args[0], args[1]):
            print(f"{k}\t{v}")
    elif cmd == "metrics-brief":
        print("; ".join(v for k, v in metrics_summary(args[0], "x") if not k.endswith("reaper_pending")))
    elif cmd == "table":
        table(args[0])
    elif cmd == "cpu-table":
        cpu_table(args[0], *([args[1:]] if len(args) > 1 else []))
    elif cmd == "compare-table":
        compare_table(args[0])
    elif cmd == "soak-table":
        soak_table(args[0])
    elif cmd == "chart":
        chart(args[0], args[1])
    elif cmd == "soak-chart":
        soak_chart(args[0], args[1], args[2])
    else:
        raise SystemExit(f"report.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
