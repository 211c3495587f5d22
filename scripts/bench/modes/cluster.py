"""--cluster: a Redis Cluster of 3 masters against the single Redis, same binary, alternating.

Owns: the local cluster (scripts/services.sh cluster start on BENCH_CLUSTER_PORT) with the
single Redis's `appendonly` for the run (restored at cleanup); one slot per Redis mode
(--compare's slot with FLASHSALE_REDIS_MODE and, for cluster, REDIS_URL the three seeds; the
journal drained through the product's master; the slot's keys deleted on every node); the
verdict: CPU per reservation of all processes, cluster ÷ single (medians) <= CPU_TARGET,
printed under the table; a FAIL exits 1. The table is --compare's with single as A and
cluster as B.
"""

import subprocess
import sys

import common
import report
import rounds
from common import Die, LARGE_STOCK, log, uint
from modes import compare

NAME = "cluster"
FLAG = "--cluster"
ARG = None
RUNS = 3
CHART = False
CPU_TARGET = 1.15


def configure(cfg, arg):
    cfg.cluster_port = uint("BENCH_CLUSTER_PORT", cfg.env.get("BENCH_CLUSTER_PORT", "7000"))
    p = cfg.cluster_port
    cfg.cluster_url = f"redis://127.0.0.1:{p},redis://127.0.0.1:{p + 1},redis://127.0.0.1:{p + 2}"


def prepare(bench):
    """Starts the local cluster and gives its nodes the single Redis's appendonly for the run."""
    cfg = bench.cfg
    env = dict(cfg.env, CLUSTER_PORT=str(cfg.cluster_port))
    r = subprocess.run([f"{common.REPO_ROOT}/scripts/services.sh", "cluster", "start"], env=env,
                       stdout=sys.stderr)
    if r.returncode != 0:
        raise Die("scripts/services.sh cluster start failed")
    bench.cluster_port = cfg.cluster_port

    def node(port, *args):
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True)

    aof = bench.redis("config", "get", "appendonly").stdout.split("\n")[1]
    was = node(cfg.cluster_port, "config", "get", "appendonly").stdout.split("\n")[1]

    def restore():
        for port in bench.cluster_ports():
            node(port, "config", "set", "appendonly", was)
        log(f"cluster nodes: appendonly back to {was}")

    bench.at_cleanup.append(restore)
    for port in bench.cluster_ports():
        if node(port, "config", "set", "appendonly", aof).returncode != 0:
            raise Die(f"could not set appendonly on the cluster node {port}")
    bench.cluster_info = (f"3 masters on 127.0.0.1:{cfg.cluster_port}-{cfg.cluster_port + 2}, appendonly {aof} as "
                          f"the single Redis (was {was}); single Redis {cfg.redis_url}")
    bench.put("cluster.info", bench.cluster_info)
    log(f"cluster nodes: appendonly {aof} for the run, as the single Redis (was {was})")


def measure(bench):
    cfg = bench.cfg

    def slot(mode, r, pos, _index):
        log(f"[{mode}] round {r}/{cfg.runs}, slot {pos} of 2")
        env = {"FLASHSALE_REDIS_MODE": mode}
        if mode == "cluster":
            env["REDIS_URL"] = cfg.cluster_url
        return compare.health_and_orders(bench, bench.bin, mode, f"{mode}-{r}", r,
                                         f"bench cluster ({mode}, round {r})", env=env,
                                         cluster=mode == "cluster")

    rs = rounds.Rounds(["single", "cluster"], cfg.runs).run(slot)
    intro = (f"Binary (every slot): {bench.build_info}.\n\n"
             f"Settings: {cfg.runs} round(s) of two slots (single then cluster in odd rounds, reversed in even "
             f"ones); each slot a fresh server (own Redis key prefix, io_uring driver, RUST_LOG=flashsale=warn, "
             f"`FLASHSALE_REDIS_MODE` single or cluster, other FLASHSALE_* settings from the environment) with a "
             f"new product of {LARGE_STOCK} units, then `GET /health` and `POST /api/orders` with wrk -t1 -c64 "
             f"-d{cfg.duration}s. Redis: {bench.cluster_info}. Target: CPU per reservation (all processes) "
             f"cluster ÷ single <= {CPU_TARGET:.2f}.\n\n")
    table = compare.ab_table(rs, "single", "cluster", "single", "cluster", "mode")
    q = verdict_ratio(rs)
    verdict = "PASS" if q is not None and q <= CPU_TARGET else "FAIL"
    shown = "-" if q is None else f"{q:.3f}"
    table += (f"\n\n**{verdict}** CPU per reservation (all processes), cluster ÷ single of the medians: "
              f"{'—' if q is None else f'{q:.3f}×'} (target ≤ {CPU_TARGET:.2f}×).")
    table += "\n\n" + compare.ab_cpu_table(rs, [("single", "single"), ("cluster", "cluster")])
    log(f"--cluster: {verdict} (median CPU per reservation, cluster ÷ single: {shown})")
    if verdict != "PASS":
        bench.fail(f"--cluster: {verdict}: CPU per reservation cluster ÷ single {shown} (target <= {CPU_TARGET})")
    return ("## flashsale on a Redis Cluster of 3 masters against one Redis, same binary, alternating",
            intro, table)


def verdict_ratio(rs):
    """Median CPU per reservation (all processes, slots whose sample worked) cluster ÷ single."""
    def med(side):
        return report.median([compare.cpu_all(s, "orders") for s in rs.of(side)])
    single, cluster = med("single"), med("cluster")
    return None if not single or cluster is None else cluster / single
