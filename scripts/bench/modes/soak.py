"""--soak MINUTES: memory flatness under sustained overload (scripts/bench.sh header).

Owns: one server with a small writer (SOAK_QUEUE_CAPACITY, SOAK_BATCH_ROWS, SOAK_HOLD_SECS)
overloaded by wrk -t1 -c SOAK_CONNECTIONS on POST /api/orders for MINUTES minutes; its RSS
every 10 s (soak-rss.tsv); an observation when the RSS at the end exceeds 1.25x the RSS after
one minute; the wait for PostgreSQL after; the soak table and chart.
"""

import os
import subprocess
import time

import common
import report
from common import Die, LARGE_STOCK, log

NAME = "soak"
FLAG = "--soak"
ARG = "a number of minutes"
RUNS = 3
CHART = True


def configure(cfg, arg):
    if not (arg or "").isdigit() or int(arg) < 1:
        raise Die(f"--soak '{arg}': expected whole minutes >= 1")
    cfg.soak_minutes = int(arg)
    env = cfg.env
    cfg.soak_qcap = env.get("SOAK_QUEUE_CAPACITY", "4096")
    cfg.soak_batch_rows = env.get("SOAK_BATCH_ROWS", "1")
    cfg.soak_hold = env.get("SOAK_HOLD_SECS", "20")
    cfg.soak_conns = env.get("SOAK_CONNECTIONS", "256")


def measure(bench):
    cfg = bench.cfg
    minutes, qcap, brows, hold, conns = (cfg.soak_minutes, cfg.soak_qcap, cfg.soak_batch_rows, cfg.soak_hold,
                                         cfg.soak_conns)
    server = common.Server(bench, bench.bin, "soak", {"FLASHSALE_QUEUE_CAPACITY": qcap,
                                                      "FLASHSALE_BATCH_ROWS": brows, "FLASHSALE_HOLD_SECS": hold})
    time.sleep(1)
    bench.put("soak.rss_idle_kb", server.rss_kb())
    bench.put("soak.settings", f"FLASHSALE_QUEUE_CAPACITY={qcap} FLASHSALE_BATCH_ROWS={brows} "
                               f"FLASHSALE_HOLD_SECS={hold}; driver {server.driver()}")
    bench.put("soak.load", f"wrk -t1 -c{conns} -d{minutes}m POST /api/orders")
    large = bench.new_product("bench soak", LARGE_STOCK)
    log(f"[soak] overloading POST /api/orders for {minutes} min (wrk -t1 -c{conns}; queue {qcap}, batch rows "
        f"{brows}, hold {hold}s); RSS every 10 s")
    f = os.path.join(bench.out, "wrk-soak.txt")
    tsv = os.path.join(bench.out, "soak-rss.tsv")
    samples = [("seconds", "rss_kb")]
    with open(f, "w") as out:
        wrk = bench.spawn(["wrk", "-t1", f"-c{conns}", f"-d{minutes}m", "--latency", "-s",
                           os.path.join(common.HELPERS, "orders.lua"), server.url("/api/orders")],
                          stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, BENCH_PRODUCT_ID=str(large)))
    t0 = int(time.time())  # whole seconds, as the samples are taken and shown
    nxt, r1, rmax = 0, None, 0
    while wrk.poll() is None:
        now = int(time.time()) - t0
        if now >= nxt:
            server.assert_alive("soak")
            rss = server.rss_kb()
            samples.append((now, rss))
            rmax = max(rmax, rss)
            if r1 is None and now >= 60:
                r1 = rss
                log(f"[soak] RSS after 1 minute: {r1} kB")
            if now % 60 < 10:
                log(f"[soak] t={now}s RSS {rss} kB")
            nxt += 10
        time.sleep(0.5)
    bench.bg.remove(wrk)
    if wrk.returncode != 0:
        raise Die(f"wrk failed during the soak (see {f})")
    server.assert_alive("soak")
    last = server.rss_kb()
    samples.append((int(time.time()) - t0, last))
    rmax = max(rmax, last)
    with open(tsv, "w") as t:
        t.write("".join(f"{a}\t{b}\n" for a, b in samples))
    bench.put("soak.rss_1min_kb", r1 if r1 is not None else "")
    if r1 is not None and last * 4 > r1 * 5:
        bench.problem(f"[soak] server RSS is not flat: {r1} kB after 1 minute, {last} kB at the end "
                      f"(×{last / r1:.2f})")
    bench.put("soak.rss_end_kb", last)
    bench.put("soak.rss_max_kb", rmax)
    statuses = server.order_statuses()
    bench.put("soak.statuses", statuses)
    w = report.parse_wrk(f)
    for k in ("rps", "p50", "p99", "requests", "non2xx"):
        bench.put(f"soak.{k}", w[k])
    log(f"[soak] load done: {w['rps']:.2f} req/s, statuses {statuses}; waiting for PostgreSQL to catch up")
    dr = common.drain_run(bench, server, os.path.join(bench.out, "soak-drain.txt"), large, ["true"])
    bench.put("soak.rows", dr["rows"])
    server.stop()
    return "## flashsale soak", f"Build: {bench.build_info}.\n\n", report.soak_table(bench.m)


def chart(bench, python):
    png = os.path.join(bench.out, "chart.png")
    logf = os.path.join(bench.out, "chart.log")
    with open(logf, "w") as e:
        r = subprocess.run([python, os.path.join(common.HELPERS, "report.py"), "soak-chart",
                            os.path.join(bench.out, "measurements.json"), os.path.join(bench.out, "soak-rss.tsv"),
                            png], stderr=e)
    if r.returncode != 0:
        common.warn(f"chart failed (see {logf})")
    if os.path.exists(png) and os.path.getsize(png):
        log(f"chart: {bench.rel(png)}")
