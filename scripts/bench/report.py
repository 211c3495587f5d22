#!/usr/bin/env python3
"""Parsing and formatting shared by the benchmark's modes (scripts/bench/), and its charts.

Owns: the parsers of wrk, ab and /metrics output; the number formats and Markdown tables;
the default mode's results table (scenarios 1-7), the CPU-per-request table every mode
prints, the --soak table; the charts (matplotlib, which may live in another python3 than the
one running the benchmark, hence the command line):

    report.py chart MEASUREMENTS.json PNG          throughput and latency of the default mode
    report.py soak-chart MEASUREMENTS.json RSS_TSV PNG   RSS over time of a --soak run

MEASUREMENTS.json is the run's Measurements (common.py): {key: [value per run, ...]}.
A missing figure prints as "—".
"""

import json
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
    """wrk's output -> {rps, p50, p99 (ms), requests, non2xx, sockerr}."""
    text = open(path, encoding="utf-8", errors="replace").read()
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    req = re.search(r"^\s+(\S+) requests in", text, re.M)
    if not (rps and p50 and p99 and req):
        raise ValueError(f"cannot parse wrk output {path}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    sockerr = sum(int(x) for x in sock.groups()) if sock else 0
    # Rounded as the figures have always been recorded (2 decimals for rates, 4 for ms).
    return {
        "rps": round(float(rps.group(1)), 2),
        "p50": round(dur_ms(p50.group(1)), 4),
        "p99": round(dur_ms(p99.group(1)), 4),
        "requests": count(req.group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "sockerr": sockerr,
    }


def parse_ab(path):
    """ab's output -> {rps, p50, p99 (whole ms), complete, failed, non2xx, keepalive}."""
    text = open(path, encoding="utf-8", errors="replace").read()
    rps = re.search(r"^Requests per second:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\d+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\d+)", text, re.M)
    done = re.search(r"^Complete requests:\s+(\d+)", text, re.M)
    failed = re.search(r"^Failed requests:\s+(\d+)", text, re.M)
    non2xx = re.search(r"^Non-2xx responses:\s+(\d+)", text, re.M)
    keepalive = re.search(r"^Keep-Alive requests:\s+(\d+)", text, re.M)
    if not (rps and p50 and p99 and done):
        raise ValueError(f"cannot parse ab output {path}")
    return {
        "rps": round(float(rps.group(1)), 2),
        "p50": int(p50.group(1)),
        "p99": int(p99.group(1)),
        "complete": int(done.group(1)),
        "failed": int(failed.group(1)) if failed else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "keepalive": int(keepalive.group(1)) if keepalive else 0,
    }


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


def metrics_summary(text, prefix):
    """Key facts from the text of a /metrics snapshot, as (key under PREFIX, value) pairs."""
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

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


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


def table(m):
    """The default mode's table (scenarios 1-7, io_uring and epoll) from its Measurements."""
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
    return md_table(["Scenario", "Metric", "io_uring (default)", "legacy epoll", "Notes"], rows)


CPU_GROUPS = [
    ("wrk", "wrk (the load generator)"),
    ("workers", "server: fs-worker threads"),
    ("writer", "server: pg-writer thread"),
    ("server_other", "server: other threads"),
    ("redis", "redis-server"),
    ("postgres", "PostgreSQL (all processes)"),
    ("other", "everything else"),
]


def cpu_per_run(cpus, rates):
    """Per run: {group: µs of CPU per request} from cpu.py's percentages (CPUS, one dict or
    None per run) and the run's rate (RATES), plus "idle" as a percentage of all cores; None
    for a run whose sample failed."""
    runs = []
    for pct, rps in zip(cpus, rates):
        if not pct or rps is None or rps <= 0:
            runs.append(None)
            continue
        us = {g: pct.get(g, 0.0) / 100 / rps * 1e6 for g, _ in CPU_GROUPS}
        us["all"] = sum(us[g] for g, _ in CPU_GROUPS)
        cores = (sum(pct.values())) / 100 or 1
        us["idle"] = pct.get("idle", 0.0) / cores
        runs.append(us)
    return runs


def cpu_runs(cpus, rates):
    """cpu_per_run without the failed samples."""
    return [r for r in cpu_per_run(cpus, rates) if r is not None]


def cpu_columns(name, get):
    """The two columns of cpu_table for one side NAME; GET(key) gives that side's list per
    run of health.cpu, health.rps, orders.cpu or orders.accepted_rps."""
    return [(f"{name}: `GET /health`", cpu_runs(get("health.cpu"), get("health.rps"))),
            (f"{name}: `POST /api/orders`", cpu_runs(get("orders.cpu"), get("orders.accepted_rps")))]


def cpu_table(cols):
    """CPU per request: one column per (title, cpu_runs) of COLS, medians of the runs."""

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
    return ("CPU per request (per reservation for orders): CPU time of each process over the middle of "
            "each wrk run (/proc, from 1 s after its start to 1 s before its end) divided by the "
            "requests of that run; medians of the runs. The ratio of reservations/s to health "
            "req/s is roughly the inverse ratio of the two 'all processes' figures, times the "
            "ratio of the busy shares.\n\n"
            + md_table(["CPU per request", *(c for c, _ in cols)], rows))


def soak_table(m):
    """The --soak table from its Measurements."""
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
    return md_table(["Soak (memory flatness)", "Value"], rows)


# -------------------------------------------------------------------- chart

class Loaded:
    """The Measurements of measurements.json, read back (raw, nums, med as in common.py)."""

    def __init__(self, path):
        self.d = json.load(open(path, encoding="utf-8"))

    def raw(self, k):
        xs = self.d.get(k)
        if not xs:
            return None
        return str(xs[0]) if len(xs) == 1 else ",".join(str(x) for x in xs)

    def med(self, k):
        xs = []
        for x in self.d.get(k, []):
            try:
                xs.append(float(x))
            except (TypeError, ValueError):
                pass
        return median(xs)


def chart(path, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = Loaded(path)
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

    m = Loaded(path)
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
    if cmd == "chart":
        chart(args[0], args[1])
    elif cmd == "soak-chart":
        soak_chart(args[0], args[1], args[2])
    else:
        raise SystemExit(f"report.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
