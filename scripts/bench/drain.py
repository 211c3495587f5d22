#!/usr/bin/env python3
"""Run one load generator command, then measure how long PostgreSQL lags behind it.

Used by scripts/bench.sh. Usage:

    drain.py --out FILE --redis-url URL [--redis-cluster] --db-url URL --journal-key KEY
             --product ID [--timeout SECS] [--interval SECS] -- COMMAND ARGS...

--redis-cluster: URL is a node of a Redis Cluster (redis-cli -c follows the journal key's
redirection to its master).

Opens a redis-cli and a psql session first (so their start-up is not counted), runs COMMAND
with its stdout and stderr going to FILE, and from the moment it exits polls every
--interval seconds until the product's Redis journal (ZCARD KEY) is 0 and
`SELECT count(*) FROM orders WHERE product_id = ID` returned the same value twice in a row:
then every accepted reservation is a row. Prints one line of key=value pairs on stdout:

    rc=0 lag_ms=123.4 rows_before=0 rows=456 journal_at_end=789 polls=12 drained=1

lag_ms is the time from the command's exit to the first poll that saw the final state
(journal empty and the row count that did not change after it).
"""

import argparse
import subprocess
import sys
import time


class Session:
    """A long-lived line-oriented client process (redis-cli or psql reading stdin)."""

    def __init__(self, argv):
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
            bufsize=1,
        )

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline()
        # redis-cli -c announces a redirection on a line of its own before the reply.
        while out.startswith("-> Redirected"):
            out = self.p.stdout.readline()
        if out == "":
            raise RuntimeError(f"{self.p.args[0]} exited while answering {line!r}")
        return out.strip()

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.p.kill()


def as_int(s, what):
    try:
        return int(s)
    except ValueError:
        raise RuntimeError(f"unexpected answer to {what}: {s!r}") from None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--redis-cluster", action="store_true")
    ap.add_argument("--db-url", required=True)
    ap.add_argument("--journal-key", required=True)
    ap.add_argument("--product", required=True, type=int)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("missing the command to run after --")

    redis = Session(["redis-cli", "-u", a.redis_url] + (["-c"] if a.redis_cluster else []))
    pg = Session(["psql", a.db_url, "-tAqX", "-v", "ON_ERROR_STOP=0"])
    count_sql = f"SELECT count(*) FROM orders WHERE product_id = {a.product};"
    zcard = f"ZCARD {a.journal_key}"
    try:
        redis.ask("PING")
        rows_before = as_int(pg.ask(count_sql), count_sql)

        with open(a.out, "w") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
        t_end = time.monotonic()

        journal_at_end = as_int(redis.ask(zcard), zcard)
        prev = None  # (time, rows) of the previous poll that saw an empty journal
        polls = 0
        drained = 0
        lag = None
        rows = rows_before
        while True:
            t = time.monotonic()
            journal = as_int(redis.ask(zcard), zcard)
            rows = as_int(pg.ask(count_sql), count_sql)
            polls += 1
            if journal == 0:
                if prev is not None and prev[1] == rows:
                    lag = prev[0] - t_end
                    drained = 1
                    break
                prev = (t, rows)
            else:
                prev = None
            if t - t_end > a.timeout:
                lag = t - t_end
                break
            time.sleep(a.interval)
        print(
            f"rc={rc} lag_ms={max(lag, 0.0) * 1000:.1f} rows_before={rows_before} rows={rows} "
            f"journal_at_end={journal_at_end} polls={polls} drained={drained}"
        )
    finally:
        redis.close()
        pg.close()


if __name__ == "__main__":
    main()
