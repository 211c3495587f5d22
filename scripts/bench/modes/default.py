"""The default mode: scenarios 1-7 on both I/O drivers, one table (scripts/bench.sh header).

Owns: one driver's block (a fresh server; BENCH_RUNS x (GET /health, POST /api/orders with
the wait for PostgreSQL); the sell-out and the ab reference command on io_uring; RSS after
the load; idle keep-alive connections), run for io_uring then for epoll
(MONOIO_FORCE_LEGACY_DRIVER=1); the sell-out verdict (PASS when PostgreSQL holds exactly
SELLOUT_STOCK units and Redis stock is 0; a FAIL exits 1); the results table, the CPU table
and the chart.
"""

import os
import re
import subprocess
import time

import common
import report
from common import LARGE_STOCK, SELLOUT_STOCK, log

NAME = "default"
FLAG = None
ARG = None
RUNS = 3
CHART = True
DRIVERS = ("io_uring", "epoll")


def configure(cfg, arg):
    pass


def measure(bench):
    run_driver(bench, "io_uring", extras=True)
    run_driver(bench, "epoll", env={"MONOIO_FORCE_LEGACY_DRIVER": "1"})
    cfg = bench.cfg
    intro = (f"Build: {bench.build_info}.\n\n"
             f"Settings: wrk {cfg.duration} s per run, {cfg.runs} run(s) of scenarios 1-3 per driver (medians "
             f"shown), server RUST_LOG=flashsale=warn, default FLASHSALE_* settings unless set in the "
             f"environment.\n\n")
    m = bench.m
    cpu = report.cpu_table([c for dv in DRIVERS for c in report.cpu_columns(dv, lambda k, dv=dv: m.all(f"{dv}.{k}"))])
    return "## flashsale benchmark", intro, report.table(m) + "\n\n" + cpu


def run_driver(bench, dv, env=None, extras=False):
    """One driver's block: server start, idle RSS, RUNS x (health, orders+lag), [sell-out and
    ab], RSS after the load, idle connections."""
    cfg = bench.cfg
    server = common.serve_fresh(bench, bench.bin, dv, dv, env)
    large = bench.new_product(f"bench large ({dv})", LARGE_STOCK)
    for r in range(1, cfg.runs + 1):
        h = common.run_health(bench, server, dv, r, cfg.runs)
        bench.m.put_all(dv, h)
        bench.m.put_all(dv, common.run_orders(bench, server, dv, r, cfg.runs, large, h))
    if extras:
        run_sellout(bench, server)
        run_ab(bench, server, large)
    rss = server.rss_kb()
    bench.put(f"{dv}.rss.after_kb", rss)
    text = server.metrics()
    if text is not None:
        for k, v in report.metrics_summary(text, f"{dv}.after"):
            if k.endswith("reaper_pending"):
                bench.put(k, v)
    log(f"[{dv}] RSS after the load {rss} kB")
    run_idle_conns(bench, server, dv)
    server.stop()


def run_sellout(bench, server):
    """Scenario 5: a fresh SELLOUT_STOCK-unit product, wrk -t1 -c256; the verdict."""
    d = bench.cfg.duration
    pid = bench.new_product("bench sell-out", SELLOUT_STOCK)
    f = os.path.join(bench.out, "wrk-io_uring-sellout.txt")
    log(f"[io_uring] sell-out: product {pid} with {SELLOUT_STOCK} units, wrk -t1 -c256 -d{d}s")
    dr = common.drain_run(bench, server, f, pid,
                          ["wrk", "-t1", "-c256", f"-d{d}s", "--latency", "-s",
                           os.path.join(common.HELPERS, "orders.lua"), server.url("/api/orders")])
    server.assert_alive("sell-out")
    w = report.parse_wrk(f)
    total = bench.psql(f"SELECT coalesce(sum(qty), 0) FROM orders WHERE product_id = {pid}")
    pending = bench.psql(f"SELECT coalesce(sum(qty), 0) FROM orders WHERE product_id = {pid} AND status = 'pending'")
    pgstock = bench.psql(f"SELECT stock FROM products WHERE id = {pid}")
    stock = bench.redis("GET", f"{server.prefix}:{{p:{pid}}}:stock").stdout.strip()
    accepted = w["requests"] - w["non2xx"]
    verdict = "PASS" if total == str(SELLOUT_STOCK) and stock == "0" else "FAIL"
    for k, v in (("verdict", verdict), ("sum_qty", total), ("redis_stock", stock or "(missing)"),
                 ("accepted", accepted), ("lag_ms", dr["lag_ms"]), ("rps", w["rps"]), ("p50", w["p50"]),
                 ("p99", w["p99"]), ("requests", w["requests"]), ("non2xx", w["non2xx"]),
                 ("sockerr", w["sockerr"])):
        bench.put(f"sellout.{k}", v)
    log(f"[io_uring] sell-out {verdict}: {total} units in orders, Redis stock {stock or '(missing)'}, "
        f"{accepted} 202s seen by wrk; server totals so far: {server.order_statuses()}")
    if verdict == "FAIL":
        bench.fail(f"sell-out FAIL: PostgreSQL has {total} units in orders (want {SELLOUT_STOCK}), Redis stock "
                   f"'{stock or '(missing)'}' (want 0)")
    if w["sockerr"]:
        bench.problem(f"sell-out: {w['sockerr']} socket errors (see {bench.rel(f)})")
    if accepted > SELLOUT_STOCK:
        bench.problem(f"sell-out: wrk saw {accepted} non-error responses for {SELLOUT_STOCK} units")
    if stock and pgstock and int(stock) + int(pending) != int(pgstock):
        bench.problem(f"sell-out: conservation broken: Redis {stock} + pending {pending} != PostgreSQL stock {pgstock}")


def run_ab(bench, server, product):
    """Scenario 6: the reference service's command, ab -n 1000 -c 100 -k."""
    f = os.path.join(bench.out, "ab-io_uring.txt")
    body = os.path.join(bench.out, "body.json")
    with open(body, "w") as b:
        b.write(f'{{"product_id":{product},"qty":1}}')
    log(f"[io_uring] ab -n 1000 -c 100 -k -p body.json -T application/json {server.url('/api/orders')}")
    with open(f, "w") as out:
        rc, _ = common.run_fg(["ab", "-n", "1000", "-c", "100", "-k", "-p", body, "-T", "application/json",
                               server.url("/api/orders")], stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        last = (open(f, errors="replace").read().splitlines() or [""])[-1]
        bench.problem(f"ab exited non-zero (see {bench.rel(f)}): {last}")
    server.assert_alive("ab")
    a = report.parse_ab(f)
    for k in ("rps", "p50", "p99", "failed", "non2xx", "keepalive"):
        bench.put(f"ab.{k}", a[k])
    log(f"[io_uring] ab: {a['rps']:.2f} req/s ({a['complete']} complete, {a['failed']} failed, "
        f"{a['non2xx']} non-2xx, {a['keepalive']} keep-alive)")
    if a["failed"] or a["non2xx"]:
        bench.problem(f"ab: {a['failed']} failed and {a['non2xx']} non-2xx of {a['complete']} requests "
                      f"(see {bench.rel(f)})")
    if a["keepalive"] != a["complete"]:
        bench.problem(f"ab -k: only {a['keepalive']} of {a['complete']} requests reused a keep-alive connection "
                      f"(HTTP/1.0 keep-alive)")


def run_idle_conns(bench, server, dv):
    """Scenario 7's last part: BENCH_IDLE_CONNS idle keep-alive connections (bench/idle_conns.py),
    the RSS with them open and whether GET /health still answers."""
    n = bench.cfg.idle_conns
    if n == 0:
        return
    f = os.path.join(bench.out, f"idle-{dv}.out")
    err = os.path.join(bench.out, f"idle-{dv}.err")
    log(f"[{dv}] opening {n} idle keep-alive connections")
    with open(f, "w") as out, open(err, "w") as e:
        p = bench.spawn([bench.py, os.path.join(common.HELPERS, "idle_conns.py"), "127.0.0.1",
                         str(server.port), str(n), "120"], stdout=out, stderr=e)
    line = None
    for _ in range(900):
        mm = re.search(r"^OPEN .*$", open(f).read(), re.M)
        if mm:
            line = mm.group(0)
            break
        if p.poll() is not None:
            break
        time.sleep(0.1)
    if line is None:
        bench.problem(f"[{dv}] idle_conns.py did not report its connections (see {bench.rel(f)} and idle-{dv}.err)")
        bench.stop_bg(p)
        return
    _, opened, failed = line.split()
    time.sleep(1)
    server.assert_alive(f"{n} idle connections ({dv})")
    rss = server.rss_kb()
    bench.put(f"{dv}.rss.conns_kb", rss)
    bench.put(f"{dv}.conns.open", int(opened))
    bench.put(f"{dv}.conns.failed", int(failed))
    code, secs = common.curl([server.url("/health")], os.devnull)
    health = "no answer" if code in ("000", "") else f"{code} in {secs * 1000:.1f} ms"
    bench.put(f"{dv}.conns.health", health)
    if not health.startswith("200"):
        bench.problem(f"[{dv}] GET /health with {opened} idle connections open: {health}")
    if int(failed):
        bench.problem(f"[{dv}] {failed} of {n} idle connections could not be opened and served "
                      f"(see {bench.rel(bench.out)}/idle-{dv}.err)")
    bench.stop_bg(p)
    mm = re.search(r"^STILL_OPEN (\d+)", open(f).read(), re.M)
    still = int(mm.group(1)) if mm else 0
    bench.put(f"{dv}.conns.still_open", still)
    log(f"[{dv}] {opened} idle connections ({failed} failed): RSS {rss} kB, /health {health}, "
        f"{still if mm else '?'} still open when closed")


def chart(bench, python):
    png = os.path.join(bench.out, "chart.png")
    logf = os.path.join(bench.out, "chart.log")
    with open(logf, "w") as e:
        r = subprocess.run([python, os.path.join(common.HELPERS, "report.py"), "chart",
                            os.path.join(bench.out, "measurements.json"), png], stderr=e)
    if r.returncode != 0:
        common.warn(f"chart failed (see {logf})")
    if os.path.exists(png) and os.path.getsize(png):
        log(f"chart: {bench.rel(png)}")
