"""--attack: do hostile clients hurt legitimate ones? (scripts/bench.sh header)

Owns: one slot (a fresh server; the webhook client's orders reserved and written to
PostgreSQL first; the slot's attack, bench/attack.py chunks or idle, wrk with
bench/lookups.lua, or none for a baseline, from ATTACK_WARMUP s before the two legitimate
loads, wrk POST /api/orders and bench/webhooks.py paying at BENCH_WEBHOOK_RATE; the
server's RSS and descriptors sampled; CPU per group with the attacker as its own group; the
slot's keys deleted); the order of the slots (rounds.py with baseline as the bracket: every
attack slot lies between two baselines); the verdicts, each attack slot and each attack (the
mean of its slots) against the mean of its neighbouring baselines: reservations/s >=
RES_TARGET x, webhook p99 <= P99_TARGET x, every webhook paid; a FAIL exits 1; the tables.
"""

import os
import signal
import statistics
import subprocess
import time

import common
import rounds
from common import Die, LARGE_STOCK, WEBHOOK_SECRET, kv, log, uint
from report import DASH, f_int, f_mib, f_ms, f_rps, md_table, parse_metrics, parse_wrk

NAME = "attack"
FLAG = "--attack"
ARG = None
RUNS = 2
CHART = False
ATTACK_WARMUP = 2  # seconds an attack runs before the legitimate load starts
# Keep-alive connections of the webhook client: enough that it keeps its pace while webhooks
# take ~50 ms on average (as under attack on a 2-core VM); 8 fell behind by seconds.
WEBHOOK_CONNS = 32


def configure(cfg, arg):
    cfg.webhook_rate = uint("BENCH_WEBHOOK_RATE", cfg.env.get("BENCH_WEBHOOK_RATE", "200"))
    cfg.attack_idle_conns = uint("BENCH_ATTACK_IDLE_CONNS", cfg.env.get("BENCH_ATTACK_IDLE_CONNS", "20000"))


def measure(bench):
    cfg = bench.cfg
    rs = rounds.Rounds(ATTACKS, cfg.runs, bracket="baseline")
    total = len(rs.plan)
    bench.put("attack.slots", total)
    rs.run(lambda sc, r, pos, n: run_slot(bench, n, total, sc))
    intro = (f"Build: {bench.build_info}.\n\n"
             f"Settings: {total} slot(s), each a fresh server (own Redis key prefix, io_uring driver, default "
             f"FLASHSALE_* settings unless set in the environment, RUST_LOG=flashsale=warn) with two legitimate "
             f"loads for {cfg.duration} s: `POST /api/orders` qty 1 with wrk -t1 -c32 on a product with "
             f"{LARGE_STOCK} units (reservations = 202s), and `POST /api/payments/webhook` (success, signed) at "
             f"{cfg.webhook_rate}/s over {WEBHOOK_CONNS} keep-alive connections for orders reserved on a second "
             f"product before the load, each once. The attack of the slot runs from {ATTACK_WARMUP} s before the "
             f"load to its end: chunks = 4 connections sending an endless chunk extension in 128-byte writes, "
             f"reconnecting when closed; idle = {cfg.attack_idle_conns} silent connections from 127.0.0.2 (fewer "
             f"if the open-file limit says so), reopened when closed; lookups = wrk -t1 -c32 on unknown orders and "
             f"products. Targets: reservations/s ≥ 0.90× and webhook p99 ≤ 2× the mean of the baselines just "
             f"before and after the slot, and every webhook paid.\n\n")
    table = attack_table(rs, bench.out)
    for sc, v in attack_verdicts(rs).items():
        if v != "PASS":
            bench.fail(f"--attack: {sc} {v} against the targets")
    return "## flashsale under attack: legitimate load beside hostile clients", intro, table


def run_slot(bench, n, total, sc):
    """One slot: a fresh server, the webhook client's orders reserved (and written to
    PostgreSQL), SC's attack, ATTACK_WARMUP s later the two legitimate loads for
    BENCH_DURATION s; the attack stopped. Returns the slot's figures."""
    cfg = bench.cfg
    d = cfg.duration
    label = f"a{n}-{sc}"
    out = bench.out
    log(f"[attack] slot {n} of {total}: {sc}")
    server = common.Server(bench, bench.bin, label)
    time.sleep(0.5)
    data = {"label": label, "rss_idle_kb": server.rss_kb()}
    large = bench.new_product(f"bench attack {n}: orders", LARGE_STOCK)
    wprod = bench.new_product(f"bench attack {n}: webhooks", LARGE_STOCK)
    refs = os.path.join(out, f"refs-{label}.txt")
    common.drain_run(bench, server, os.path.join(out, f"reserve-{label}.txt"), wprod,
                     [bench.py, os.path.join(common.HELPERS, "webhooks.py"), "reserve", "--addr", server.addr,
                      "--product", str(wprod), "--count", str(cfg.webhook_rate * (d + 1)), "--out", refs])

    sampler = common.RssSampler(server.pid, os.path.join(out, f"rss-{label}.txt"))
    sampler.start()
    f = os.path.join(out, f"attack-{label}.txt")
    argv = None
    if sc == "chunks":
        argv = [bench.py, os.path.join(common.HELPERS, "attack.py"), "chunks", "--addr", server.addr,
                "--conns", "4", "--piece", "128", "--warmup", str(ATTACK_WARMUP)]
    elif sc == "idle":
        argv = [bench.py, os.path.join(common.HELPERS, "attack.py"), "idle", "--addr", server.addr,
                "--source", "127.0.0.2", "--conns", str(cfg.attack_idle_conns), "--warmup", str(ATTACK_WARMUP)]
    elif sc == "lookups":
        # Stopped with SIGINT at the end of the load (wrk then prints its summary); the
        # duration is only a bound.
        argv = ["wrk", "-t1", "-c32", f"-d{ATTACK_WARMUP + d + 60}s", "--latency", "-s",
                os.path.join(common.HELPERS, "lookups.lua"), f"http://{server.addr}"]
    elif sc != "baseline":
        raise Die(f"unknown attack scenario {sc}")
    attacker = None
    groups = {}
    if argv:
        with open(f, "w") as af:
            attacker = bench.spawn(argv, stdout=af, stderr=subprocess.STDOUT)
        groups["attacker"] = attacker.pid
    time.sleep(ATTACK_WARMUP)  # in the baseline too, so every slot has the same timing
    if attacker and attacker.poll() is not None:
        tail = " ".join(open(f, errors="replace").read().splitlines()[-5:])
        raise Die(f"the {sc} attacker exited before the load started: {tail}")

    log(f"[attack] {sc}: POST /api/orders (product {large}) wrk -t1 -c32 -d{d}s, webhooks at "
        f"{cfg.webhook_rate}/s (product {wprod})")
    wh_out, wh_err = os.path.join(out, f"webhooks-{label}.txt"), os.path.join(out, f"webhooks-{label}.err")
    with open(wh_out, "w") as wo, open(wh_err, "w") as we:
        webhooks = bench.spawn([bench.py, os.path.join(common.HELPERS, "webhooks.py"), "send", "--addr", server.addr,
                                "--refs", refs, "--secret", WEBHOOK_SECRET, "--rate", str(cfg.webhook_rate),
                                "--conns", str(WEBHOOK_CONNS), "--duration", str(d),
                                "--latencies", os.path.join(out, f"webhook-latencies-{label}.txt")],
                               stdout=wo, stderr=we)
    cpu = common.Cpu(bench, server, os.path.join(out, f"cpu-{label}.txt"), {"webhooks": webhooks.pid, **groups})
    wf = os.path.join(out, f"wrk-{label}.txt")
    common.run_wrk(["-t1", "-c32", f"-d{d}s", "--latency", "-s", os.path.join(common.HELPERS, "orders.lua"),
                    server.url("/api/orders")], wf, env={"BENCH_PRODUCT_ID": str(large)})
    bench.await_bg(webhooks, 15)  # it stops on its own after BENCH_DURATION s
    data["cpu"] = cpu.end()
    if attacker:
        bench.stop_bg(attacker, signal.SIGINT if sc == "lookups" else signal.SIGTERM)
    sampler.stop()
    server.assert_alive(f"the {sc} attack")

    w = parse_wrk(wf)
    accepted = w["requests"] - w["non2xx"]
    data["res_rps"] = round(w["rps"] * accepted / w["requests"], 2) if w["requests"] > 0 else 0.0
    data.update(rps=w["rps"], p50=w["p50"], p99=w["p99"], non2xx=w["non2xx"], sockerr=w["sockerr"])
    wh = next((ln for ln in open(wh_out).read().splitlines() if ln.startswith("sent=")), None)
    if not wh:
        raise Die(f"webhooks.py printed no result (see {wh_out} and .err)")
    data["webhooks"] = wh
    err = open(wh_err).read()
    if err:
        bench.problem(f"[{label}] webhooks.py: {err[:300]}")
    line = ""
    if sc == "lookups":
        a = parse_wrk(f)
        st = next((ln.split()[1] for ln in open(f).read().splitlines() if ln.startswith("LOOKUP_STATUSES")), "")
        line = (f"rps={a['rps']:.2f} requests={a['requests']} non2xx={a['non2xx']} sockerr={a['sockerr']} "
                f"p99_ms={a['p99']:.4f} statuses={st}")
    elif sc != "baseline":
        line = next((ln for ln in open(f).read().splitlines() if ln.startswith("seconds=")), "")
        if not line:
            tail = " ".join(open(f, errors="replace").read().splitlines()[-3:])
            bench.problem(f"[{label}] the attacker printed no result: {tail}")
    data["attack"] = line or "none"
    fds = sampler.fds
    data["rss_max_kb"] = max(sampler.rss, default=0)
    data["fds"] = (f"before:{fds[0] if fds else 0},average:{statistics.mean(fds) if fds else 0:.0f},"
                   f"max:{max(fds, default=0)}")
    whd = kv(wh)
    log(f"[attack] {sc}: {data['res_rps']:.2f} reservations/s (orders p99 {w['p99']:.4f} ms, non-2xx {w['non2xx']}); "
        f"webhooks: {whd.get('paid', '')} paid of {whd.get('sent', '')}, p50 {whd.get('p50_ms', '')} ms, p99 "
        f"{whd.get('p99_ms', '')} ms; server RSS max {data['rss_max_kb']} kB; attack: {line or 'none'}")
    server.stop()
    # As in --compare: every slot starts on the same Redis (with ~200k keys left per slot,
    # the baselines fell within one run, and a new server's restart check outlasted
    # webhooks.py's start).
    bench.clean_redis_keys(f"{server.prefix}:*")
    return data


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


def attack_slots(rs):
    """One dict per slot of an --attack run, in order, with its baseline reference (the mean
    of the nearest baseline slots before and after it) and its verdict."""
    slots = []
    for slot in rs.slots:
        d = slot.data
        wh = kv_line(d.get("webhooks"))
        slots.append({
            "n": slot.index,
            "sc": slot.name,
            "label": d.get("label", ""),
            "res": d.get("res_rps"),
            "p99": d.get("p99"),
            "non2xx": d.get("non2xx"),
            "sockerr": d.get("sockerr"),
            "wh": wh,
            "wp50": fnum(wh, "p50_ms"),
            "wp99": fnum(wh, "p99_ms"),
            "sent": fnum(wh, "sent"),
            "ok": fnum(wh, "ok"),
            "paid": fnum(wh, "paid"),
            "attack": kv_line(d.get("attack")),
            "rss_idle": d.get("rss_idle_kb"),
            "rss_max": d.get("rss_max_kb"),
            "fds": (d.get("fds") or DASH).replace(":", " ").replace(",", ", "),
            "cpu": d.get("cpu") or {},
        })
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
    return slots


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


def attack_table(rs, outdir=None):
    """The slots' table, the per-attack table with the verdicts, and the notes."""
    slots = attack_slots(rs)
    summary = attack_summary(slots)
    out = []

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
    out.append("Every slot: a fresh server, reservations (`POST /api/orders`, wrk -t1 -c32, 202s only) and "
          "paced signed payment webhooks at the same time, beside the slot's attack. ÷ baseline: "
          "against the mean of the baseline slots just before and after it. Webhook latency: from "
          "writing the request to reading the whole answer (200 after the PostgreSQL commit). "
          "RSS max: the server's VmRSS sampled every 0.1 s from the attack's start to the load's end. "
          "CPU: % of one core over the middle of the load (bench/cpu.py) used by the server's threads / "
          "the attacker / other processes (not the server, Redis, PostgreSQL, wrk or the bench's "
          "clients: kernel threads such as ksoftirqd, and other work on the machine); the "
          "attackers share the two cores with everything else.\n")
    out.append(md_table(["#", "scenario", "reservations/s", "÷ baseline", "orders p99", "webhook p50 / p99",
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
    out.append(f"\nPer attack: the mean of its slots against the targets (reservations/s ≥ {RES_TARGET:.2f}× "
          f"and webhook p99 ≤ {P99_TARGET:.0f}× the baseline, every webhook paid).\n")
    out.append(md_table(["attack", "slots", "reservations/s ÷ baseline (slots)",
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
    out.append("")
    out += [f"- {n}" for n in notes]
    return "\n".join(out)


def attack_verdicts(rs):
    """{attack: PASS|FAIL} (the mean of its slots against the targets)."""
    return {sc: v for sc, (_, _, _, v, _) in attack_summary(attack_slots(rs)).items()}
