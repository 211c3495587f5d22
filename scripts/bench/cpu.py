#!/usr/bin/env python3
"""Where the CPU goes during a load run, for scripts/bench.sh.

Usage: cpu.py DELAY SECONDS SERVER_PID [GROUP=PID ...]

Waits DELAY seconds (so the window falls inside the wrk run), then reads the CPU time of
every thread on the machine from /proc twice, SECONDS apart, and prints one line
`group=percent,group=percent,...` where percent is of one core over the window (200 = both
cores of a 2-core machine busy) and the groups are:
  wrk, ab          the load generator
  workers          the server's fs-worker-* threads (HTTP, Redis calls, timer wheel)
  writer           the server's pg-writer thread
  server_other     the server's other threads (main)
  redis            redis-server
  postgres         every postgres process (the writer's backend, WAL writer, checkpointer...)
  GROUP            the processes named by GROUP=PID arguments (e.g. attacker=1234), before
                   any of the groups below
  other            everything else
  idle             no thread running (from /proc/stat: idle + iowait)
A thread that starts or ends inside the window counts for what it used inside it, as far as
/proc shows it (a thread that ended is missed).
"""

import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def comm_of(stat):
    return stat[stat.index("(") + 1 : stat.rindex(")")]


def group(pid, server_pid, pcomm, tcomm, named):
    if pid in named:
        return named[pid]
    if pid == server_pid:
        if tcomm.startswith("fs-worker"):
            return "workers"
        if tcomm == "pg-writer":
            return "writer"
        return "server_other"
    if pcomm in ("wrk", "ab"):
        return pcomm
    if pcomm.startswith("redis-server"):
        return "redis"
    if pcomm.startswith("postgres") or pcomm.startswith("postmaster"):
        return "postgres"
    return "other"


def snapshot(server_pid, named):
    """{(pid, tid): (group, ticks)} for every thread /proc lists."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                pcomm = comm_of(f.read())
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    s = f.read()
                fields = s[s.rindex(")") + 2 :].split()
                # utime and stime are fields 14 and 15 of stat(5): 11 and 12 after the comm.
                ticks = int(fields[11]) + int(fields[12])
                out[(pid, tid)] = (group(int(pid), server_pid, pcomm, comm_of(s), named), ticks)
        except (OSError, ValueError, IndexError):
            continue  # the thread ended while being read
    return out


def idle_ticks():
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    return int(cpu[4]) + int(cpu[5])  # idle + iowait, summed over all cores


def main():
    delay, seconds, server_pid = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    named = {}
    for arg in sys.argv[4:]:
        name, _, pid = arg.partition("=")
        named[int(pid)] = name
    time.sleep(delay)
    a, ia, ta = snapshot(server_pid, named), idle_ticks(), time.monotonic()
    time.sleep(seconds)
    b, ib, tb = snapshot(server_pid, named), idle_ticks(), time.monotonic()
    window = tb - ta
    used = {}
    for key, (g, ticks) in b.items():
        before = a[key][1] if key in a else 0  # a thread started inside the window
        used[g] = used.get(g, 0) + max(0, ticks - before)
    pct = {g: t / HZ / window * 100 for g, t in used.items()}
    pct["idle"] = (ib - ia) / HZ / window * 100
    order = ["wrk", "ab", "workers", "writer", "server_other", "redis", "postgres",
             *dict.fromkeys(named.values()), "other", "idle"]
    print(",".join(f"{g}={pct[g]:.1f}" for g in order if g in pct))


if __name__ == "__main__":
    main()
