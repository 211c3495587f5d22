"""--compare OLD_BINARY: an A/B of two builds, alternating (scripts/bench.sh header).

Owns: the two private binaries (OLD as given, NEW the freshly built target/release/flashsale)
and their description in the report; one slot (a fresh server of one binary with its own
Redis key prefix, a new large-stock product, GET /health then POST /api/orders with the wait
for PostgreSQL and CPU sampling, its keys deleted); the A/B table (every slot, the medians
per side, B ÷ A of the medians), also used by --cluster. No verdict, no chart.
"""

import os

import common
import report
import rounds
from common import Die, LARGE_STOCK, log

NAME = "compare"
FLAG = "--compare"
ARG = "the path of the old flashsale binary"
RUNS = 3
CHART = False


def configure(cfg, arg):
    if not (os.path.isfile(arg) and os.access(arg, os.X_OK)):
        raise Die(f"--compare '{arg}': not an executable file")
    cfg.compare_old = os.path.realpath(arg)


def after_build(bench):
    src = bench.cfg.compare_old
    bench.old_bin = bench.copy_binary(src, "flashsale-old")
    bench.new_bin = bench.bin
    old_info = bench.binary_info(src, bench.old_bin)
    new_info = f"{bench.binary_info(bench.rel(common.BUILT_BIN), bench.new_bin)}, {bench.checkout_info()}"
    if bench.build_secs == 0:
        new_info += " (not rebuilt: BENCH_BUILD=0)"
    bench.put("old.binary", old_info)
    bench.put("new.binary", new_info)
    bench.compare_info = f"- **OLD**: {old_info}\n- **NEW**: {new_info}"
    if open(bench.old_bin, "rb").read() == open(bench.new_bin, "rb").read():
        bench.compare_info += "\n\nThe two binaries are byte-identical: NEW ÷ OLD shows only the noise."
    log(f"OLD: {old_info}")
    log(f"NEW: {new_info}")


def measure(bench):
    cfg = bench.cfg

    def slot(who, r, pos, _index):
        src = cfg.compare_old if who == "old" else common.BUILT_BIN
        log(f"[{who}] round {r}/{cfg.runs}, slot {pos} of 2: the copy of {src}")
        binary = bench.old_bin if who == "old" else bench.new_bin
        return health_and_orders(bench, binary, who, f"{who}-{r}", r, f"bench compare ({who}, round {r})")

    rs = rounds.Rounds(["old", "new"], cfg.runs).run(slot)
    intro = (f"{bench.compare_info}\n\n"
             f"Settings: {cfg.runs} round(s); in each, each binary serves one slot: a fresh server (own Redis "
             f"key prefix, a new product with {LARGE_STOCK} units, io_uring driver), then `GET /health` and "
             f"`POST /api/orders` with wrk -t1 -c64 -d{cfg.duration}s, reservations (202s) counted. Order: OLD "
             f"first in odd rounds, NEW first in even ones. Same database for all slots (migrated by NEW). "
             f"Server RUST_LOG=flashsale=warn, default FLASHSALE_* settings unless set in the environment.\n\n")
    table = ab_table(rs, "old", "new", "OLD", "NEW", "binary")
    table += "\n\n" + ab_cpu_table(rs, [("old", "old"), ("new", "new")])
    return "## flashsale A/B comparison: OLD against NEW, alternating", intro, table


def health_and_orders(bench, binary, key, label, r, product_name, env=None, cluster=False):
    """One A/B slot: a fresh server (LABEL: own Redis prefix and log), a new large product,
    (1) then (2); its keys deleted after. Returns the slot's figures."""
    server = common.serve_fresh(bench, binary, key, label, env)
    large = bench.new_product(product_name, LARGE_STOCK)
    data = common.run_health(bench, server, key, r, bench.cfg.runs)
    data.update(common.run_orders(bench, server, key, r, bench.cfg.runs, large, data, cluster=cluster))
    server.stop()
    # Every slot starts on the same Redis: with the keys of earlier slots left in place
    # (~450k per slot), Redis's own work grew round by round and the later rounds measured
    # Redis, not the binary.
    bench.clean_redis_keys(f"{server.prefix}:*")
    return data


def cpu_all(slot, kind):
    """All processes' µs of CPU per request (kind health) or per reservation (orders)."""
    rate = "health.rps" if kind == "health" else "orders.accepted_rps"
    c = report.cpu_per_run([slot.get(f"{kind}.cpu")], [slot.get(rate)])[0]
    return c["all"] if c else None


def ab_table(rs, a, b, a_name, b_name, column):
    """Every slot (round, position, side), the medians per side and B ÷ A of the medians;
    then B ÷ A within each round and the range of single slots."""
    dash = report.DASH

    def figures(s):
        return {"health": s.get("health.rps"), "res": s.get("orders.accepted_rps"), "ratio": s.get("ratio"),
                "p99": s.get("orders.p99"), "cpu_h": cpu_all(s, "health"), "cpu_o": cpu_all(s, "orders")}

    per = {side: [figures(s) for s in rs.of(side)] for side in (a, b)}
    names = {a: a_name, b: b_name}

    def med(side, k):
        return report.median([f[k] for f in per[side]])

    def us(x):
        return dash if x is None else f"{x:.1f}"

    def cells(get):
        return [report.f_rps(get("health")), report.f_rps(get("res")), report.f_x(get("ratio"), 3),
                report.f_ms(get("p99")), f"{us(get('cpu_h'))} / {us(get('cpu_o'))}"]

    rows = []
    for s in rs.slots:
        f = figures(s)
        rows.append([str(s.round), str(s.position), names[s.name], *cells(lambda k: f[k])])
    n = f"median of {rs.rounds}" if rs.rounds > 1 else "1 round"
    for side in (a, b):
        rows.append([f"**{n}**", "", f"**{names[side]}**", *(f"**{c}**" for c in cells(lambda k: med(side, k)))])

    def quot(k, digits=3):
        return report.f_ratio(med(b, k), med(a, k), digits)

    rows.append([f"**{b_name} ÷ {a_name}** (of the medians)", "", "",
                 quot("health"), f"**{quot('res')}**", f"**{quot('ratio')}**", quot("p99"),
                 f"{quot('cpu_h')} / {quot('cpu_o')}"])
    out = ["Each slot: a fresh server, `GET /health` (the no-op ceiling) then `POST /api/orders`; "
           "ratio = that slot's reservations/s ÷ its health req/s. CPU: all processes' CPU time "
           "over the middle of each wrk run (bench/cpu.py) per health request / per reservation.\n",
           report.md_table(["round", "slot", column, "`GET /health` req/s", "reservations/s", "ratio",
                            "orders p99", "CPU µs per request / reservation"], rows)]

    def paired(k):
        qs = []
        for r in range(1, rs.rounds + 1):
            sa, sb = rs.in_round(a, r), rs.in_round(b, r)
            x = figures(sa)[k] if sa else None
            y = figures(sb)[k] if sb else None
            qs.append(dash if not x or y is None else f"{y / x:.3f}×")
        return ", ".join(qs)

    def spread(side, k, fmt):
        xs = [f[k] for f in per[side] if f[k] is not None]
        return f"{fmt(min(xs))}–{fmt(max(xs))}" if xs else dash

    out.append(f"\n{b_name} ÷ {a_name} within each round: reservations/s {paired('res')}; "
               f"ratio {paired('ratio')}; CPU per reservation {paired('cpu_o')}. "
               f"Single slots range: reservations/s {a_name} {spread(a, 'res', report.f_rps)}, "
               f"{b_name} {spread(b, 'res', report.f_rps)}; ratio {a_name} "
               f"{spread(a, 'ratio', lambda x: report.f_x(x, 3))}, "
               f"{b_name} {spread(b, 'ratio', lambda x: report.f_x(x, 3))}.")
    return "\n".join(out)


def ab_cpu_table(rs, sides):
    """The CPU-per-request table, two columns per (side, title) of SIDES."""
    cols = []
    for side, title in sides:
        cols += report.cpu_columns(title, lambda k, side=side: rs.values(side, k))
    return report.cpu_table(cols)
