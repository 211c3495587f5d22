#!/usr/bin/env python3
"""The benchmark's entry point (scripts/bench.sh execs it): the mode registry and one run.

Owns: the command line (one mode flag at most, as documented in scripts/bench.sh's header,
which --help prints), the steps every mode shares in their order (tools, open-file limit,
services, the mode's preparation, the build, the database, the mode's measurements, the
report in bench-results/<UTC timestamp>/results.md, the chart), the exit status (1 on an
error or a FAILed verdict, 130/143 on SIGINT/SIGTERM) and the cleanup at the end.

A mode is one module of modes/ registered in MODES below, with:
    NAME, FLAG ("--x"; None for the default), ARG (metavar of its argument, or None),
    RUNS (default BENCH_RUNS), CHART (draws chart.png),
    configure(cfg, arg)   reads and checks its own settings before anything starts
    prepare(bench)        optional: before the build (e.g. the cluster, the tokens)
    binary_source(cfg)    optional: a binary to measure instead of building one
    after_build(bench)    optional: after the binary is copied aside
    measure(bench)        the measurements -> (header, intro Markdown, table Markdown)
    chart(bench, python)  optional, with CHART: draws OUT/chart.png with that python
"""

import json
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Die, log, warn  # noqa: E402
from modes import attack, auth, cluster, compare, default, soak  # noqa: E402

MODES = {m.NAME: m for m in (default, soak, compare, attack, auth, cluster)}
FLAGS = {m.FLAG: m for m in MODES.values() if m.FLAG}


def usage():
    """The header comment of scripts/bench.sh (the documentation of every mode)."""
    out = []
    for i, line in enumerate(open(os.path.join(common.REPO_ROOT, "scripts", "bench.sh"), encoding="utf-8")):
        if i == 0:
            continue
        if not line.startswith("#"):
            break
        out.append(line[2:] if line.startswith("# ") else line[1:])
    return "".join(out)


def parse_args(argv):
    """-> (mode module, its argument or None)."""
    chosen = []
    args = list(argv)
    while args:
        a = args.pop(0)
        if a in ("-h", "--help"):
            sys.stdout.write(usage())
            sys.exit(0)
        flag, eq, val = a.partition("=")
        mod = FLAGS.get(flag)
        if mod is None or (eq and not mod.ARG):
            sys.stderr.write(usage())
            raise Die(f"unknown argument '{a}'")
        if mod.ARG and not eq:
            if not args:
                raise Die(f"{flag} needs {mod.ARG}")
            val = args.pop(0)
        chosen.append((mod, val if mod.ARG else None))
    if len(chosen) > 1:
        raise Die(f"{chosen[1][0].FLAG} cannot be combined with {chosen[0][0].FLAG}")
    return chosen[0] if chosen else (default, None)


def run(bench, mod):
    cfg = bench.cfg
    bench.ensure_tools()
    bench.raise_nofile()
    bench.machine_info()
    bench.put("duration", cfg.duration)
    bench.put("runs", cfg.runs)
    bench.put("idle_conns", cfg.idle_conns)
    log(f"results go to {bench.rel(bench.out)}/")
    bench.start_services()
    mpl = bench.find_mpl_python() if mod.CHART else None
    if hasattr(mod, "prepare"):
        mod.prepare(bench)
    bench.build(mod.binary_source(cfg) if hasattr(mod, "binary_source") else None)
    if hasattr(mod, "after_build"):
        mod.after_build(bench)
    bench.put("build", bench.build_info)
    bench.recreate_db()
    bench.migrate(bench.bin)

    t_measure = time.time()
    header, intro, table = mod.measure(bench)
    parts = [f"{header} ({bench.ts})\n\n", f"Machine: {bench.machine}.\n{common.NOTE}\n\n", intro, table, "\n"]
    parts.append(f"\nTiming: build {bench.build_secs} s, measurements {int(time.time() - t_measure)} s; "
                 f"whole script {int(time.time() - bench.t_start)} s up to this report.\n")
    if bench.problems:
        parts.append("\nObservations:\n" + "".join(f"- {p}\n" for p in bench.problems))
    text = "".join(parts)
    results = os.path.join(bench.out, "results.md")
    with open(results, "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(text)
    sys.stdout.flush()
    if mod.CHART:
        save_measurements(bench)
        if mpl:
            mod.chart(bench, mpl)
        else:
            note = "\n(no chart.png: matplotlib is not available)\n"
            sys.stdout.write(note)
            with open(results, "a", encoding="utf-8") as f:
                f.write(note)
    return 0


def save_measurements(bench):
    with open(os.path.join(bench.out, "measurements.json"), "w", encoding="utf-8") as f:
        json.dump(bench.m.d, f, indent=1, default=str)


def on_term(signum, frame):
    raise SystemExit(143)


def main(argv):
    try:
        mod, arg = parse_args(argv)
        cfg = common.Config(os.environ, mod.NAME, mod.RUNS)
        mod.configure(cfg, arg)
    except Die as e:
        log(f"error: {e}")
        return 1
    bench = common.Bench(cfg)
    signal.signal(signal.SIGTERM, on_term)
    # Also when started in the background of a script, which ignores SIGINT for it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rc = 1
    try:
        rc = run(bench, mod)
    except Die as e:
        log(f"error: {e}")
        rc = 1
    except KeyboardInterrupt:
        rc = 130
    except Exception:  # noqa: BLE001  (a bug of the harness: shown, cleaned up, exit 1)
        traceback.print_exc()
        rc = 1
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            bench.cleanup()
        except Exception as e:  # noqa: BLE001
            warn(f"cleanup failed: {e}")
        save_measurements(bench)
    if rc == 0 and bench.failed:
        rc = 1
    log(f"finished in {int(time.time() - bench.t_start)} s (exit {rc}); results in {bench.rel(bench.out)}/")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
