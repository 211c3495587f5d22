#!/usr/bin/env python3
"""Parsing, table and chart helpers for scripts/bench.sh.

    report.py wrk FILE          -> "rps p50_ms p99_ms requests non2xx socket_errors"
    report.py ab FILE           -> "rps p50_ms p99_ms complete failed non2xx keepalive"
    report.py metrics FILE PREFIX -> key facts of a /metrics snapshot as TSV lines (FILE - = stdin)
    report.py metrics-brief FILE  -> the same facts on one line
    report.py table TSV         -> the Markdown results table (stdout)
    report.py cpu-table TSV [KEY[=NAME]...] -> CPU per request, one column pair per KEY
                                   (default: io_uring epoll), headed NAME if given
    report.py compare-table TSV [OLD_NAME NEW_NAME]
                                -> the Markdown table of a --compare run (KEYs old and new;
                                   --cluster names them single and cluster)
    report.py cluster-verdict TSV -> "PASS|FAIL ratio": --cluster's CPU per reservation target
    report.py soak-table TSV    -> the Markdown table of a --soak run (stdout)
    report.py attack-table TSV [DIR] -> the Markdown tables of an --attack run (DIR: where the
                                   servers' /metrics snapshots are)
    report.py attack-verdicts TSV -> "attack PASS|FAIL", one line per attack
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
    for key in keys:
        dv, _, name = key.partition("=")
        name = name or dv
        cols.append((f"{name}: `GET /health`", cpu_runs(m, f"{dv}.health.cpu", f"{dv}.health.rps")))
        cols.append((f"{name}: `POST /api/orders`",
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


def compare_table(path, old_name="OLD", new_name="NEW"):
    """--compare: one row per slot (round, binary), the medians per binary, NEW ÷ OLD.
    --cluster names its two modes instead (measured under the keys old and new)."""
    m = M(load(path))
    names = {"old": old_name, "new": new_name}
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

    rows.append([f"**{new_name} ÷ {old_name}** (of the medians)", "", "",
                 quot("health"), f"**{quot('res')}**", f"**{quot('ratio')}**", quot("p99"),
                 f"{quot('cpu_h')} / {quot('cpu_o')}"])
    print("Each slot: a fresh server, `GET /health` (the no-op ceiling) then `POST /api/orders`; "
          "ratio = that slot's reservations/s ÷ its health req/s. CPU: all processes' CPU time "
          "over the middle of each wrk run (bench/cpu.py) per health request / per reservation.\n")
    print(md_table(["round", "slot", "binary" if old_name == "OLD" else "mode", "`GET /health` req/s", "reservations/s", "ratio",
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

    print(f"\n{new_name} ÷ {old_name} within each round: reservations/s {paired('res')}; "
          f"ratio {paired('ratio')}; CPU per reservation {paired('cpu_o')}. "
          f"Single slots range: reservations/s {old_name} {spread('old', 'res', f_rps)}, "
          f"{new_name} {spread('new', 'res', f_rps)}; ratio {old_name} "
          f"{spread('old', 'ratio', lambda x: f_x(x, 3))}, "
          f"{new_name} {spread('new', 'ratio', lambda x: f_x(x, 3))}.")


CLUSTER_CPU_TARGET = 1.15


def cluster_verdict(path):
    """--cluster: PASS when the median CPU per reservation (all processes) in cluster mode
    (key new) is at most CLUSTER_CPU_TARGET × single mode's (key old)."""
    m = M(load(path))

    def med(b):
        xs = [c["all"] for c in cpu_runs(m, f"{b}.orders.cpu", f"{b}.orders.accepted_rps")]
        return statistics.median(xs) if xs else None

    single, cluster = med("old"), med("new")
    if not single or cluster is None:
        print("FAIL -")
        return
    q = cluster / single
    print(f"{'PASS' if q <= CLUSTER_CPU_TARGET else 'FAIL'} {q:.3f}")


# ------------------------------------------------------------------- attack

ATTACKS = ("chunks", "idle", "lookups")
ATTACK_NAMES = {
    "baseline": "baseline (no attack)",
    "chunks": "endless chunk extension, 4 conns",
    "idle": "idle-connection flood from 127.0.0.2",
    "lookups": "lookup flood, wrk -c32",
}
RES_TARGET, P99_TARGET = 0.90, 2.0


def kv_line(text):
    """'a=1 b=x' -> {'a': '1', 'b': 'x'}; numbers stay strings."""
    out = {}
    for w in (text or "").split():
        k, sep, v = w.partition("=")
        if sep:
            out[k] = v
    return out


def fnum(d, k):
    try:
        x = float(d.get(k, ""))
    except ValueError:
        return None
    return None if x != x else x  # NaN -> None


def attack_slots(path):
    """One dict per slot of an --attack run, in order, with its baseline reference (the mean
    of the nearest baseline slots before and after it) and its verdict."""
    m = M(load(path))
    n = int(m.med("attack.slots") or 0)
    slots = []
    for i in range(1, n + 1):
        k = f"a{i}"
        wh = kv_line(m.raw(f"{k}.webhooks"))
        s = {
            "n": i,
            "sc": m.raw(f"{k}.scenario") or "?",
            "label": m.raw(f"{k}.label") or "",
            "res": m.med(f"{k}.res_rps"),
            "p99": m.med(f"{k}.p99"),
            "non2xx": m.med(f"{k}.non2xx"),
            "sockerr": m.med(f"{k}.sockerr"),
            "wh": wh,
            "wp50": fnum(wh, "p50_ms"),
            "wp99": fnum(wh, "p99_ms"),
            "sent": fnum(wh, "sent"),
            "ok": fnum(wh, "ok"),
            "paid": fnum(wh, "paid"),
            "attack": kv_line(m.raw(f"{k}.attack")),
            "rss_idle": m.med(f"{k}.rss_idle_kb"),
            "rss_max": m.med(f"{k}.rss_max_kb"),
            "fds": (m.raw(f"{k}.fds") or DASH).replace(":", " ").replace(",", ", "),
            "cpu": {},
            "statuses": m.raw(f"{m.raw(f'{k}.label')}.m.statuses"),
        }
        cpu = m.raw(f"{k}.cpu") or ""
        try:
            s["cpu"] = {g: float(v) for g, v in (kv.split("=") for kv in cpu.split(";") if kv)}
        except ValueError:
            s["cpu"] = {}
        slots.append(s)
    for i, s in enumerate(slots):
        s["ref_res"] = s["ref_p99"] = None
        s["ratio"] = s["p99_ratio"] = s["verdict"] = None
        if s["sc"] == "baseline":
            continue
        near = [b for b in (next((x for x in reversed(slots[:i]) if x["sc"] == "baseline"), None),
                            next((x for x in slots[i + 1:] if x["sc"] == "baseline"), None)) if b]
        res = [b["res"] for b in near if b["res"] is not None]
        p99 = [b["wp99"] for b in near if b["wp99"] is not None]
        s["refs"] = [b["n"] for b in near]
        s["ref_res"] = statistics.mean(res) if res else None
        s["ref_p99"] = statistics.mean(p99) if p99 else None
        if s["res"] is not None and s["ref_res"]:
            s["ratio"] = s["res"] / s["ref_res"]
        if s["wp99"] is not None and s["ref_p99"]:
            s["p99_ratio"] = s["wp99"] / s["ref_p99"]
        s["all_paid"] = bool(s["sent"]) and s["paid"] == s["sent"]
        s["verdict"] = verdict(s["ratio"], s["p99_ratio"], s["all_paid"])
    return m, slots


def verdict(ratio, p99_ratio, all_paid):
    if ratio is None or p99_ratio is None:
        return "FAIL"
    return "PASS" if ratio >= RES_TARGET and p99_ratio <= P99_TARGET and all_paid else "FAIL"


def attack_summary(slots):
    """{scenario: (mean ratio, mean p99 ratio, all paid, verdict, runs)} for each attack run."""
    out = {}
    for sc in ATTACKS:
        runs = [s for s in slots if s["sc"] == sc]
        if not runs:
            continue
        rs = [s["ratio"] for s in runs if s["ratio"] is not None]
        ps = [s["p99_ratio"] for s in runs if s["p99_ratio"] is not None]
        r = statistics.mean(rs) if len(rs) == len(runs) else None
        p = statistics.mean(ps) if len(ps) == len(runs) else None
        paid = all(s["all_paid"] for s in runs)
        out[sc] = (r, p, paid, verdict(r, p, paid), runs)
    return out


def server_view(outdir, label):
    """What the server counted in a slot (its /metrics at the end): answers other than 2xx by
    status, 503s by cause, connections refused at accept."""
    if not outdir or not label:
        return ""
    try:
        text = open(f"{outdir}/metrics-{label}.txt", encoding="utf-8", errors="replace").read()
    except OSError:
        return ""
    ms = parse_metrics(text)
    st = {}
    for n, lb, v in ms:
        if n.endswith("http_requests_total") and v and not lb.get("status", "").startswith("2"):
            st[lb.get("status", "?")] = st.get(lb.get("status", "?"), 0) + v
    parts = [f"{k}×{int(v):,}" for k, v in sorted(st.items()) if k != "503"]
    why = {lb.get("reason", "?"): v for n, lb, v in ms if n.endswith("unavailable_responses_total") and v}
    if why:
        parts.append("503: " + ", ".join(f"{k} ×{int(v):,}" for k, v in sorted(why.items())))
    refused = {lb.get("cap", "?"): v for n, lb, v in ms if n.endswith("connections_refused_total") and v}
    if refused:
        parts.append("connections refused at accept: "
                     + ", ".join(f"{k} ×{int(v):,}" for k, v in sorted(refused.items())))
    return "; ".join(parts)


def attack_intensity(s):
    a = s["attack"]
    if s["sc"] == "chunks":
        return (f"{(fnum(a, 'bytes_per_s') or 0) / 1e6:,.1f} MB/s in {fnum(a, 'sends_per_s') or 0:,.0f} "
                f"sends/s; {fnum(a, 'conns_per_s') or 0:,.0f} conns/s closed by the server "
                f"(answers seen: {a.get('statuses', DASH).replace(';', ', ').replace(':', '×')})")
    if s["sc"] == "idle":
        return (f"{fnum(a, 'target') or 0:,.0f} sockets: connected and not seen closed "
                f"{fnum(a, 'held_avg') or 0:,.0f} on average (max {fnum(a, 'held_max') or 0:,.0f}; "
                f"the accept queue and unread 503s count), {fnum(a, 'connecting_avg') or 0:,.0f} "
                f"still connecting; server descriptors {s['fds']}; refused (503) {fnum(a, 'refused') or 0:,.0f} "
                f"({fnum(a, 'refused_per_s') or 0:,.0f}/s); closed silently {fnum(a, 'silent_closes') or 0:,.0f}; "
                f"connects {fnum(a, 'connects_per_s') or 0:,.0f}/s, failed {fnum(a, 'connect_errors') or 0:,.0f}")
    if s["sc"] == "lookups":
        st = a.get("statuses", "") or DASH
        return (f"{fnum(a, 'rps') or 0:,.0f} req/s, p99 {f_ms(fnum(a, 'p99_ms'))}; statuses "
                f"{st.replace(',', ', ').replace('=', '×')}")
    return DASH


def cpu_cell(s):
    c = s["cpu"]
    if not c:
        return DASH
    server = sum(c.get(g, 0.0) for g in ("workers", "writer", "server_other"))
    att = c.get("attacker")
    return f"{server:.0f}% / {DASH if att is None else f'{att:.0f}%'} / {c.get('other', 0.0):.0f}%"


def attack_table(path, outdir=None):
    m, slots = attack_slots(path)
    summary = attack_summary(slots)

    def ratio(x, digits=2):
        return DASH if x is None else f"{x:.{digits}f}×"

    rows = []
    for s in slots:
        base = s["sc"] == "baseline"
        wh = s["wh"]
        rows.append([
            str(s["n"]),
            ATTACK_NAMES.get(s["sc"], s["sc"]),
            f_rps(s["res"]),
            DASH if base else ratio(s["ratio"]),
            f_ms(s["p99"]),
            f"{f_ms(s['wp50'])} / {f_ms(s['wp99'])}",
            DASH if base else ratio(s["p99_ratio"]),
            f"{f_int(s['ok'])} / {f_int(s['sent'])}",
            attack_intensity(s),
            f_mib(s["rss_max"]),
            cpu_cell(s),
            DASH if base else f"**{s['verdict']}**",
        ])
    print("Every slot: a fresh server, reservations (`POST /api/orders`, wrk -t1 -c32, 202s only) and "
          "paced signed payment webhooks at the same time, beside the slot's attack. ÷ baseline: "
          "against the mean of the baseline slots just before and after it. Webhook latency: from "
          "writing the request to reading the whole answer (200 after the PostgreSQL commit). "
          "RSS max: the server's VmRSS sampled every 0.1 s from the attack's start to the load's end. "
          "CPU: % of one core over the middle of the load (bench/cpu.py) used by the server's threads / "
          "the attacker / other processes (not the server, Redis, PostgreSQL, wrk or the bench's "
          "clients: kernel threads such as ksoftirqd, and other work on the machine); the "
          "attackers share the two cores with everything else.\n")
    print(md_table(["#", "scenario", "reservations/s", "÷ baseline", "orders p99", "webhook p50 / p99",
                    "p99 ÷ baseline", "webhooks 200 / sent", "attack intensity",
                    "server RSS max", "CPU server / attacker / other", "verdict"], rows))

    srows = []
    for sc, (r, p, paid, v, runs) in summary.items():
        srows.append([ATTACK_NAMES[sc], str(len(runs)),
                      f"{ratio(r)} ({', '.join(ratio(s['ratio']) for s in runs)})",
                      f"{ratio(p)} ({', '.join(ratio(s['p99_ratio']) for s in runs)})",
                      "yes" if paid else "**no**",
                      f_mib(max((s["rss_max"] for s in runs if s["rss_max"] is not None), default=None)),
                      f"**{v}**"])
    print(f"\nPer attack: the mean of its slots against the targets (reservations/s ≥ {RES_TARGET:.2f}× "
          f"and webhook p99 ≤ {P99_TARGET:.0f}× the baseline, every webhook paid).\n")
    print(md_table(["attack", "slots", "reservations/s ÷ baseline (slots)",
                    "webhook p99 ÷ baseline (slots)", "all webhooks paid", "server RSS max",
                    "verdict"], srows))

    bases = [s for s in slots if s["sc"] == "baseline"]
    res = [s["res"] for s in bases if s["res"] is not None]
    p99 = [s["wp99"] for s in bases if s["wp99"] is not None]
    notes = []
    if res:
        spread = max(res) / min(res)
        notes.append(f"Baselines (drift over the run): reservations/s {', '.join(f_rps(x) for x in res)} "
                     f"(max ÷ min {spread:.2f}); webhook p99 {', '.join(f_ms(x) for x in p99)}."
                     + (f" The baselines differ by more than the {1 - RES_TARGET:.0%} the reservations "
                        "target allows: the machine was too noisy for the verdicts to tell the attacks "
                        "apart from the noise; run again when it is quiet." if spread > 1 / RES_TARGET else ""))
    late = [fnum(s["wh"], "late_max_ms") for s in slots]
    if any(x is not None for x in late):
        notes.append("Webhook client pacing, latest start after its due time per slot: "
                     + ", ".join(f_ms(x) for x in late) + " (large values: the client itself was short of CPU "
                     f"or all its {slots[0]['wh'].get('conns', '?')} connections busy; latency counted "
                     "from the due time instead, p99 per slot: "
                     + ", ".join(f_ms(fnum(s["wh"], "sched_p99_ms")) for s in slots) + ").")
    orders = [f"{s['n']}: {f_int(s['non2xx'])}" + (f" (socket errors {f_int(s['sockerr'])})" if s["sockerr"] else "")
              for s in slots if s["non2xx"] or s["sockerr"]]
    notes.append("Non-2xx answers to the legitimate `POST /api/orders` per slot: "
                 + ("; ".join(orders) if orders else "none") + ".")
    for s in slots:
        view = server_view(outdir, s["label"])
        if view:
            notes.append(f"Server /metrics, slot {s['n']} ({s['sc']}): {view}.")
    print()
    for n in notes:
        print(f"- {n}")


def attack_verdicts(path):
    _, slots = attack_slots(path)
    for sc, (_, _, _, v, _) in attack_summary(slots).items():
        print(f"{sc} {v}")


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
        compare_table(*args[:3])
    elif cmd == "cluster-verdict":
        cluster_verdict(args[0])
    elif cmd == "soak-table":
        soak_table(args[0])
    elif cmd == "attack-table":
        attack_table(args[0], args[1] if len(args) > 1 else None)
    elif cmd == "attack-verdicts":
        attack_verdicts(args[0])
    elif cmd == "chart":
        chart(args[0], args[1])
    elif cmd == "soak-chart":
        soak_chart(args[0], args[1], args[2])
    else:
        raise SystemExit(f"report.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
