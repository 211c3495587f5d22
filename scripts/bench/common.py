"""The parts every benchmark mode shares (scripts/bench.sh -> main.py -> modes/<mode>.py).

Owns:
  - Config: the run's settings from the environment (BENCH_*, DATABASE_URL, REDIS_URL), checked
  - Bench: one run's context: the output folder (bench-results/<UTC timestamp>/), progress
    on stderr, the measurements (Measurements) and the observations (problems), tool
    installs (apt-get), scripts/services.sh, `cargo build --release`, the private copies of
    the binaries, the benchmark database (drop, create, migrate) and the cleanup at exit
    (background processes, servers, Redis keys, the database, the temporary folder)
  - Server: one `flashsale serve` on a free loopback port with its own Redis key prefix
    (<run prefix>-<label>): start until GET /ready, RSS, I/O driver, /metrics, stop
  - wrk runs and their parsing, CPU sampling with bench/cpu.py, the PostgreSQL lag with
    bench/drain.py, and the two scenarios every mode measures: GET /health (the ceiling) and
    POST /api/orders (reservations/s, with the wait for PostgreSQL)

Invariants: every process started here is stopped by Bench.cleanup, whatever ends the run
(a verdict, an error, SIGINT/SIGTERM); every server's keys start with the run's prefix, so
cleanup deletes them all; a fatal error is a Die, caught once in main.py.
"""

import datetime
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402  (parsing and formatting)

REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
HELPERS = HERE
BUILT_BIN = os.path.join(REPO_ROOT, "target", "release", "flashsale")

LARGE_STOCK = 1000000000
SELLOUT_STOCK = 10000
WEBHOOK_SECRET = "bench"
# Seconds of the whole run's bound on PostgreSQL catching up after a load.
DRAIN_TIMEOUT = 120
NOTE = ("The load generator (wrk/ab, one thread) shares these cores with the server, Redis and "
        "PostgreSQL, so every figure is for the whole box, not the server alone.")


class Die(Exception):
    """A fatal error: main.py logs it, cleans up and exits 1."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def warn(msg):
    log(f"warning: {msg}")


def uint(name, text, minimum=1):
    """A whole number >= minimum from an environment variable or argument, else Die."""
    if not re.fullmatch(r"[0-9]+", text or "") or int(text) < minimum:
        what = "whole seconds >= 1" if name == "BENCH_DURATION" else (
            f"a whole number >= {minimum}" if minimum else "a whole number")
        raise Die(f"{name}='{text}': expected {what}")
    return int(text)


# ------------------------------------------------------------------ settings

class Config:
    """The settings every mode reads (each mode reads its own extra BENCH_* variables)."""

    def __init__(self, env, mode, runs_default):
        self.env = env
        # Seconds per wrk run.
        self.duration = uint("BENCH_DURATION", env.get("BENCH_DURATION", "10"))
        # Repetitions per driver (default mode) or rounds (A/B modes).
        self.runs = uint("BENCH_RUNS", env.get("BENCH_RUNS") or str(runs_default))
        # Idle keep-alive connections of scenario 7 (default mode).
        self.idle_conns = uint("BENCH_IDLE_CONNS", env.get("BENCH_IDLE_CONNS", "10000"), 0)
        # The database this run drops and recreates.
        self.db = env.get("BENCH_DB", "flashsale_bench")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.db):
            raise Die(f"BENCH_DB='{self.db}': use lowercase letters, digits and _")
        self.keep_db = env.get("BENCH_KEEP_DB", "0") == "1"
        self.build = env.get("BENCH_BUILD", "1") != "0"
        self.base_db_url = env.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/flashsale"
        self.redis_url = env.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        self.db_url = self.db_url_for(self.db)
        self.admin_db_url = self.db_url_for("postgres")
        self.mode = mode

    def db_url_for(self, name):
        """DATABASE_URL's server and credentials with another database name."""
        url = self.base_db_url
        base, q, query = url.partition("?")
        query = q + query
        root = base.rsplit("/", 1)[0] if "/" in base.split("://", 1)[-1] else base
        return f"{root}/{name}{query}"


# ------------------------------------------------------------------ measurements

class Measurements:
    """Every figure of the run under a dotted key (e.g. io_uring.health.rps); a key put
    several times (once per run) holds them all in order. Dumped to measurements.json."""

    def __init__(self):
        self.d = {}

    def put(self, key, value):
        self.d.setdefault(key, []).append(value)

    def put_all(self, prefix, values):
        for k, v in values.items():
            self.put(f"{prefix}.{k}", v)

    def all(self, key):
        return list(self.d.get(key, []))

    def raw(self, key):
        xs = self.d.get(key)
        if not xs:
            return None
        return str(xs[0]) if len(xs) == 1 else ",".join(str(x) for x in xs)

    def nums(self, key):
        out = []
        for x in self.d.get(key, []):
            try:
                out.append(float(x))
            except (TypeError, ValueError):
                pass
        return out

    def med(self, key):
        xs = self.nums(key)
        return report.median(xs)

    def total(self, key):
        xs = self.nums(key)
        return int(sum(xs)) if xs else None


# ------------------------------------------------------------------ the run

class Bench:
    """One run of the benchmark: where it writes, what it started, what it measured."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.t_start = time.time()
        self.ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.out = os.path.join(REPO_ROOT, "bench-results", self.ts + ("-soak" if cfg.mode == "soak" else ""))
        os.makedirs(self.out, exist_ok=True)
        self.prefix = "bench" + os.urandom(4).hex()
        self.m = Measurements()
        self.problems = []
        self.failed = False
        # The interpreter itself, not a wrapper such as pyenv's shim (it forks several
        # processes first, which would shift cpu.py's window).
        self.py = sys.executable or "python3"
        self.bg = []  # background Popen objects, stopped by cleanup
        self.servers = []  # running Server objects
        self.services_up = False
        self.db_created = False
        self.tmpdir = None
        self.bin = None  # the private copy of the binary measured
        self.build_secs = 0
        self.build_info = "?"
        self.machine = "?"
        self.apt_updated = False
        self.cluster_port = None  # --cluster: set while the local cluster's keys are this run's
        self.at_cleanup = []  # callables run first by cleanup (e.g. restoring a setting)

    # -------------------------------------------------------------- reporting

    def rel(self, path):
        return os.path.relpath(path, REPO_ROOT) if path.startswith(REPO_ROOT + "/") else path

    def put(self, key, value):
        self.m.put(key, value)

    def problem(self, msg):
        warn(msg)
        self.problems.append(msg)

    def fail(self, msg):
        """A verdict FAILed: recorded, and the run exits 1."""
        self.failed = True
        self.problem(msg)

    # -------------------------------------------------------------- tools

    def apt_install(self, *pkgs):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        if sudo and not shutil.which("sudo"):
            warn(f"need root or sudo to install: {' '.join(pkgs)}")
            return False
        logf = os.path.join(self.out, "install.log")
        log(f"installing with apt-get: {' '.join(pkgs)} (log: {self.rel(logf)})")
        with open(logf, "a") as f:
            if not self.apt_updated:
                subprocess.run(sudo + ["apt-get", "update"], stdout=f, stderr=f)
                self.apt_updated = True
            return subprocess.run(
                sudo + ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                        "--no-install-recommends", *pkgs], stdout=f, stderr=f).returncode == 0

    def ensure_tools(self):
        want = {"wrk": "wrk", "ab": "apache2-utils", "curl": "curl"}
        missing = [pkg for tool, pkg in want.items() if not shutil.which(tool)]
        if missing and not self.apt_install(*missing):
            raise Die(f"could not install {' '.join(missing)} (see {self.out}/install.log)")
        for tool in want:
            if not shutil.which(tool):
                raise Die(f"{tool} is still missing")
        if not shutil.which("cargo"):
            raise Die("cargo is not installed (install Rust with rustup)")

    def find_mpl_python(self):
        """A python3 that has matplotlib (installing python3-matplotlib if none has), or None."""
        def has(py):
            exe = shutil.which(py)
            return exe and subprocess.run([exe, "-c", "import matplotlib"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL).returncode == 0
        for py in ("python3", "/usr/bin/python3"):
            if has(py):
                return py
        if self.apt_install("python3-matplotlib"):
            for py in ("/usr/bin/python3", "python3"):
                if has(py):
                    return py
        warn("matplotlib is not available (python3-matplotlib did not install): no chart.png")
        return None

    def raise_nofile(self):
        """The open-file limit up to its hard limit (for the servers, wrk and the idle clients)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 1048576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            warn(f"could not raise the open-file limit to {want}")
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if self.cfg.idle_conns + 64 > limit:
            warn(f"open-file limit {limit} is below BENCH_IDLE_CONNS={self.cfg.idle_conns}; opening {limit - 64}")
            self.cfg.idle_conns = limit - 64
        return limit

    def machine_info(self):
        cpu = None
        try:
            text = open("/proc/cpuinfo").read()
            for pat in (r"^model name\s*:\s*(.*)$", r"^(?:Hardware|cpu model|Processor)\s*:\s*(.*)$"):
                mm = re.search(pat, text, re.M)
                if mm:
                    cpu = mm.group(1)
                    break
        except OSError:
            pass
        load = " ".join(open("/proc/loadavg").read().split()[:3])
        self.machine = (f"nproc {os.cpu_count()}, kernel {os.uname().release}, CPU: {cpu or 'unknown'}, "
                        f"load average at start {load}")
        self.put("machine", self.machine)

    def checkout_info(self):
        def git(*args):
            r = subprocess.run(["git", "-C", REPO_ROOT, *args], capture_output=True, text=True)
            return r.stdout if r.returncode == 0 else None
        head = (git("rev-parse", "--short", "HEAD") or "?").strip()
        status = git("status", "--porcelain") or ""
        return f"checkout at commit {head} with {len(status.splitlines())} uncommitted changes"

    @staticmethod
    def binary_info(source, copy):
        """SOURCE's path with the size, mtime and sha256 of its private COPY."""
        import hashlib
        st = os.stat(copy)
        h = hashlib.sha256()
        with open(copy, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{source} ({st.st_size} bytes, modified {mtime}, sha256 {h.hexdigest()[:16]})"

    # -------------------------------------------------------------- services, build, database

    def start_services(self):
        log("starting PostgreSQL and Redis (scripts/services.sh)")
        env = dict(os.environ, DATABASE_URL=self.cfg.db_url, REDIS_URL=self.cfg.redis_url)
        r = subprocess.run([os.path.join(REPO_ROOT, "scripts", "services.sh"), "start"], env=env,
                           stdout=sys.stderr)
        if r.returncode != 0:
            raise Die("scripts/services.sh start failed")
        self.services_up = True

    def build(self, source=None):
        """Builds target/release/flashsale (unless BENCH_BUILD=0 or SOURCE is given: a binary
        not built here) and copies it aside (self.bin), so a rebuild during the run cannot
        swap it."""
        built = source or BUILT_BIN
        t0 = time.time()
        if source:
            log(f"BENCH_BIN: measuring {source}, not building")
        elif not self.cfg.build:
            log(f"BENCH_BUILD=0: using the existing {self.rel(BUILT_BIN)} without building")
        else:
            logf = os.path.join(self.out, "build.log")
            log(f"building: cargo build --release (log: {self.rel(logf)})")
            with open(logf, "w") as f:
                rc, _ = run_fg(["cargo", "build", "--release"], cwd=REPO_ROOT, stdout=f, stderr=f)
            if rc != 0:
                sys.stderr.write("".join(open(logf).readlines()[-30:]))
                raise Die("cargo build --release failed")
            self.build_secs = int(time.time() - t0)
            log(f"build done in {self.build_secs} s")
        if not os.access(built, os.X_OK):
            raise Die(f"{built} is missing")
        self.tmpdir = tempfile.mkdtemp(prefix="flashsale-bench.", dir=os.environ.get("TMPDIR", "/tmp"))
        self.bin = os.path.join(self.tmpdir, "flashsale")
        shutil.copy2(built, self.bin)
        mtime = datetime.datetime.fromtimestamp(os.stat(built).st_mtime, datetime.timezone.utc)
        self.build_info = f"binary built {mtime.strftime('%Y-%m-%dT%H:%M:%SZ')}, {self.checkout_info()}"
        if not source and not self.cfg.build:
            self.check_stale()

    def check_stale(self):
        """BENCH_BUILD=0: an observation when the checkout has files newer than the binary."""
        t = os.stat(BUILT_BIN).st_mtime
        newer = []
        for top in ("src", "lua", "migrations", "Cargo.toml", "Cargo.lock"):
            p = os.path.join(REPO_ROOT, top)
            files = [p] if os.path.isfile(p) else [os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs]
            newer += [os.path.relpath(f, REPO_ROOT) for f in files if os.stat(f).st_mtime > t]
        if newer:
            newer.sort()
            self.problem(f"BENCH_BUILD=0 and {self.rel(BUILT_BIN)} is older than {len(newer)} file(s) of the "
                         f"checkout ({' '.join(newer[:3])} ...): the figures are those of an older build")

    def copy_binary(self, source, name):
        """A private copy of another binary (--compare's OLD) in the run's temporary folder."""
        dst = os.path.join(self.tmpdir, name)
        shutil.copy2(source, dst)
        return dst

    def psql(self, sql, url=None):
        r = subprocess.run(["psql", url or self.cfg.db_url, "-v", "ON_ERROR_STOP=1", "-qtAX", "-c", sql],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Die(f"psql failed: {sql[:80]}: {r.stderr.strip()[:300]}")
        return r.stdout.strip()

    def recreate_db(self):
        db = self.cfg.db
        log(f"recreating database {db}; Redis key prefixes {self.prefix}-<server label>")
        r = subprocess.run(["psql", self.cfg.admin_db_url, "-v", "ON_ERROR_STOP=1", "-qX",
                            "-c", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', "-c", f'CREATE DATABASE "{db}"'],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Die(f"could not recreate database {db}: {r.stderr.strip()[:300]}")
        self.db_created = True

    def migrate(self, binary):
        logf = os.path.join(self.out, "migrate.log")
        env = dict(os.environ, DATABASE_URL=self.cfg.db_url, REDIS_URL=self.cfg.redis_url,
                   RUST_LOG="flashsale=warn")
        with open(logf, "w") as f:
            r = subprocess.run([binary, "migrate"], env=env, stdout=f, stderr=f)
        if r.returncode != 0:
            raise Die(f"flashsale migrate failed: {' '.join(open(logf).readlines()[-5:])}")

    def new_product(self, name, stock):
        return int(self.psql(f"INSERT INTO products (name, price_cents, stock, max_per_order) "
                             f"VALUES ('{name}', 100, {stock}, 10) RETURNING id"))

    # -------------------------------------------------------------- Redis keys

    def redis(self, *args, url=None):
        return subprocess.run(["redis-cli", "-u", url or self.cfg.redis_url, *args],
                              capture_output=True, text=True)

    def clean_redis_keys(self, pattern=None):
        """Deletes the keys matching PATTERN (default: every key of this run: all servers'
        prefixes start with the run's prefix), on the single Redis and, in --cluster, on
        every node of the cluster."""
        pattern = pattern or f"{self.prefix}-*"
        if self.cluster_port:
            self.clean_cluster_keys(pattern)
        r = self.redis("--scan", "--pattern", pattern)
        if r.returncode != 0:
            warn(f"could not list the Redis keys under {pattern} (left in place)")
            return
        keys = r.stdout.split()
        # UNLINK in batches of 200 keys, streamed through one connection: an inline command
        # line must stay under Redis's 64 KiB limit.
        lines = "".join("UNLINK " + " ".join(keys[i:i + 200]) + "\n" for i in range(0, len(keys), 200))
        if lines:
            p = subprocess.run(["redis-cli", "-u", self.cfg.redis_url, "--pipe"], input=lines, text=True,
                               capture_output=True)
            if p.returncode != 0:
                warn("redis-cli --pipe failed while deleting keys")
        after = self.redis("--scan", "--pattern", pattern)
        left = len(after.stdout.split()) if after.returncode == 0 else None
        if left != 0:
            warn(f"{'some' if left is None else left} Redis keys under {pattern} are left (of {len(keys)})")
        else:
            log(f"deleted the {len(keys)} Redis keys under {pattern}")

    def cluster_ports(self):
        return [self.cluster_port + i for i in range(3)]

    def clean_cluster_keys(self, pattern):
        """The keys matching PATTERN on every node of the local cluster, one UNLINK each (keys
        of several slots cannot share a command there)."""
        n = 0
        for port in self.cluster_ports():
            r = subprocess.run(["redis-cli", "-p", str(port), "--scan", "--pattern", pattern],
                               capture_output=True, text=True)
            keys = r.stdout.split()
            if keys:
                subprocess.run(["redis-cli", "-p", str(port), "--pipe"], text=True, capture_output=True,
                               input="".join(f"UNLINK {k}\n" for k in keys))
            n += len(keys)
        log(f"deleted {n} keys under {pattern} on the cluster's nodes")

    # -------------------------------------------------------------- processes

    def spawn(self, argv, stdout=None, stderr=None, env=None):
        """A background process stopped by cleanup if still running then."""
        p = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env)
        self.bg.append(p)
        return p

    def stop_bg(self, p, sig=signal.SIGTERM, wait=10.0):
        """Sends SIG to a background process, waits for it (WAIT s, then SIGKILL)."""
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                self.problem(f"process {p.pid} did not stop within {wait:.0f} s of {signal.Signals(sig).name}; killed")
                p.kill()
                p.wait()
        if p in self.bg:
            self.bg.remove(p)

    def await_bg(self, p, secs):
        """Waits up to SECS for a background process to end on its own, then stop_bg."""
        try:
            p.wait(secs)
        except subprocess.TimeoutExpired:
            pass
        self.stop_bg(p)

    # -------------------------------------------------------------- cleanup

    def cleanup(self):
        """Stops everything this run started and deletes what it made (keys, database,
        temporary folder), whatever ended the run."""
        for fn in self.at_cleanup:
            try:
                fn()
            except Exception as e:  # noqa: BLE001  (cleanup goes on)
                warn(f"cleanup step failed: {e}")
        for p in list(self.bg):
            self.stop_bg(p)
        for s in list(self.servers):
            s.stop()
        if self.services_up:
            self.clean_redis_keys()
            if self.db_created and not self.cfg.keep_db:
                r = subprocess.run(["psql", self.cfg.admin_db_url, "-qX", "-c",
                                    f'DROP DATABASE IF EXISTS "{self.cfg.db}" WITH (FORCE)'],
                                   capture_output=True)
                if r.returncode == 0:
                    log(f"dropped database {self.cfg.db}")
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


# ------------------------------------------------------------------ the server

class Server:
    """One `flashsale serve` on a free loopback port with its own Redis key prefix."""

    def __init__(self, bench, binary, label, env=None):
        self.bench = bench
        self.label = label
        # Each server gets its own key prefix, so the second one does not start on the first
        # one's pending orders (it would re-arm its expiry timers from them).
        self.prefix = f"{bench.prefix}-{label}"
        self.log = os.path.join(bench.out, f"server-{label}.log")
        self.port = free_port()
        e = {k: v for k, v in os.environ.items() if k != "MONOIO_FORCE_LEGACY_DRIVER"}
        e.update(PAYMENT_WEBHOOK_SECRET=WEBHOOK_SECRET, FLASHSALE_LISTEN=f"127.0.0.1:{self.port}",
                 DATABASE_URL=bench.cfg.db_url, REDIS_URL=bench.cfg.redis_url,
                 FLASHSALE_REDIS_PREFIX=self.prefix, RUST_LOG="flashsale=warn")
        e.update(env or {})
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen([binary, "serve"], stdout=f, stderr=subprocess.STDOUT, env=e)
        bench.servers.append(self)
        self.pid = self.proc.pid
        self.addr = None
        self._wait_ready()

    def _wait_ready(self):
        label = self.label
        for _ in range(600):
            mm = re.search(r"flashsale listening on http://(\S+)", open(self.log, errors="replace").read())
            if mm:
                self.addr = mm.group(1)
                break
            if self.proc.poll() is not None:
                sys.stderr.write("".join(open(self.log, errors="replace").readlines()[-20:]))
                self.bench.servers.remove(self)
                raise Die(f"flashsale serve ({label}) exited during start-up (log: {self.log})")
            time.sleep(0.1)
        else:
            raise Die(f"flashsale serve ({label}) printed no 'listening' line within 60 s (log: {self.log})")
        # Ready when Redis and PostgreSQL are (a new prefix's restart check scans Redis first).
        for _ in range(600):
            if http_status(self.url("/ready"), timeout=2) == 200:
                break
            time.sleep(0.1)
        else:
            raise Die(f"flashsale serve ({label}) is not ready (GET /ready) within 60 s (log: {self.log})")
        log(f"server ({label}) pid {self.pid} listening on {self.addr}")

    def url(self, path):
        return f"http://{self.addr}{path}"

    def assert_alive(self, during):
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self.bench.servers.remove(self)
            tail = " ".join(x.rstrip("\n") for x in open(self.log, errors="replace").readlines()[-5:])
            self.bench.problem(f"the server ({self.label}) died (exit {rc}) during: {during}; log tail: {tail}")
            raise Die(f"the server died during {during} (log: {self.log})")

    def rss_kb(self):
        try:
            for line in open(f"/proc/{self.pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    def driver(self):
        n = 0
        try:
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                try:
                    if os.readlink(f"/proc/{self.pid}/fd/{fd}") == "anon_inode:[io_uring]":
                        n += 1
                except OSError:
                    pass
        except OSError:
            pass
        return f"io_uring ({n} rings)" if n else "epoll (no io_uring ring)"

    def metrics(self):
        """The text of GET /metrics, or None."""
        return http_get(self.url("/metrics"), timeout=5)

    def order_statuses(self):
        """The server's totals so far from /metrics: POST /api/orders statuses (and why 503),
        writer; one line."""
        text = self.metrics()
        if text is None:
            return ""
        return "; ".join(v for k, v in report.metrics_summary(text, "x") if not k.endswith("reaper_pending"))

    def stop(self):
        """SIGTERM (after a /metrics snapshot into metrics-LABEL.txt and its facts into the
        measurements under LABEL.m), 30 s, then SIGKILL; problems for an unclean exit or
        WARN/ERROR lines in the log."""
        if self not in self.bench.servers:
            return
        self.bench.servers.remove(self)
        b, label = self.bench, self.label
        text = self.metrics() if self.proc.poll() is None else None
        if text is not None:
            with open(os.path.join(b.out, f"metrics-{label}.txt"), "w") as f:
                f.write(text)
            for k, v in report.metrics_summary(text, f"{label}.m"):
                b.put(k, v)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            b.problem(f"the server ({label}) did not exit within 30 s of SIGTERM; killed")
            self.proc.kill()
            self.proc.wait()
        rc = self.proc.returncode
        if rc != 0:
            b.problem(f"the server ({label}) exited with status {rc} after SIGTERM (log: {b.rel(self.log)})")
        else:
            log(f"server ({label}) stopped (exit 0)")
        bad = [ln for ln in open(self.log, errors="replace") if re.search(r" (WARN|ERROR) ", ln)]
        if bad:
            b.problem(f"server ({label}) log has {len(bad)} WARN/ERROR lines, first: {bad[0].rstrip()[:300]}")

    def journal_key(self, product):
        return f"{self.prefix}:{{p:{product}}}:journal"


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _opener():
    """urllib without the environment's proxies (the server is on loopback)."""
    import urllib.request
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url, timeout=5):
    try:
        with _opener().open(url, timeout=timeout) as r:
            return r.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001
        return None


def http_status(url, timeout=2):
    import urllib.error
    try:
        with _opener().open(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:  # noqa: BLE001
        return None


def curl(args, out_file, timeout=5):
    """curl -s -o OUT_FILE -w '%{http_code} %{time_total}' ARGS: (code, seconds); code '000'
    when nothing answered."""
    r = subprocess.run(["curl", "-s", "-o", out_file, "-w", "%{http_code} %{time_total}",
                        "--max-time", str(timeout), *args], capture_output=True, text=True)
    parts = r.stdout.split()
    return (parts[0] if parts else "000"), (float(parts[1]) if len(parts) > 1 else 0.0)


def kv(line):
    """'a=1 b=x' -> {'a': '1', 'b': 'x'}."""
    return {k: v for k, s, v in (w.partition("=") for w in (line or "").split()) if s}


# ------------------------------------------------------------------ measuring

class Cpu:
    """Where the CPU goes during a wrk run about to start (bench/cpu.py; the processes named
    in GROUPS {group: pid} are counted as their group), from 1 s after its start to 1 s before
    its end."""

    def __init__(self, bench, server, file, groups=None):
        self.bench, self.file = bench, file
        d = bench.cfg.duration
        argv = [bench.py, os.path.join(HELPERS, "cpu.py"), "1", str(d - 2 if d > 3 else 1), str(server.pid)]
        argv += [f"{g}={pid}" for g, pid in (groups or {}).items()]
        self.f = open(file, "w")
        self.proc = bench.spawn(argv, stdout=self.f, stderr=subprocess.STDOUT)

    def end(self):
        """{group: percent of one core}, or None (and an observation) when sampling failed."""
        rc = self.proc.wait()
        self.f.close()
        if self.proc in self.bench.bg:
            self.bench.bg.remove(self.proc)
        text = open(self.file).read().strip()
        try:
            if rc != 0:
                raise ValueError
            return {g: float(v) for g, v in (x.split("=") for x in text.split(",") if x)}
        except ValueError:
            self.bench.problem(f"CPU sampling failed: {text[:300]}")
            return None


def run_fg(argv, **kw):
    """Runs ARGV (Popen's keyword arguments) in its own process group and waits for it;
    when the wait is interrupted (SIGINT, SIGTERM, an error), the whole group is stopped
    (drain.py's wrk with it) before the exception goes on. -> (exit status, stdout or None)."""
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    try:
        out, _ = p.communicate()
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        except ProcessLookupError:
            pass
        raise
    return p.returncode, out


def run_wrk(argv, out_file, env=None):
    """wrk ARGV with its output to OUT_FILE; Die when it fails."""
    with open(out_file, "w") as f:
        rc, _ = run_fg(["wrk", *argv], stdout=f, stderr=subprocess.STDOUT,
                       env=None if env is None else dict(os.environ, **env))
    if rc != 0:
        raise Die(f"wrk failed (see {out_file})")


def drain_run(bench, server, out_file, product, cmd, env=None, cluster=False):
    """Runs CMD through bench/drain.py: the load, then the wait until PostgreSQL holds every
    reservation of PRODUCT. Returns drain.py's facts {rc, lag_ms, rows_before, rows,
    journal_at_end, drained} (numbers)."""
    if cluster:
        redis_args = ["--redis-url", f"redis://127.0.0.1:{bench.cluster_port}", "--redis-cluster"]
    else:
        redis_args = ["--redis-url", bench.cfg.redis_url]
    argv = [bench.py, os.path.join(HELPERS, "drain.py"), "--out", out_file, *redis_args,
            "--db-url", bench.cfg.db_url, "--journal-key", server.journal_key(product),
            "--product", str(product), "--timeout", str(DRAIN_TIMEOUT), "--", *cmd]
    e = dict(os.environ, BENCH_PRODUCT_ID=str(product), **(env or {}))
    rc, out = run_fg(argv, env=e, stdout=subprocess.PIPE, text=True)
    if rc != 0:
        raise Die(f"drain.py failed for {out_file}")
    d = {}
    for k, v in kv(out).items():
        try:
            d[k] = float(v) if "." in v else int(v)
        except ValueError:
            d[k] = v
    if d.get("rc") != 0:
        raise Die(f"the load generator failed (exit {d.get('rc')}; see {out_file})")
    if d.get("drained") != 1:
        bench.problem(f"PostgreSQL did not catch up within {DRAIN_TIMEOUT} s after {bench.rel(out_file)} "
                      f"(rows {d.get('rows')})")
    return d


def run_health(bench, server, key, run, runs):
    """Scenario 1: GET /health, wrk -t1 -c64 (the no-op ceiling), with CPU sampling. Returns
    {health.rps, health.p50, health.p99, health.non2xx, health.sockerr, health.cpu}."""
    d = bench.cfg.duration
    f = os.path.join(bench.out, f"wrk-{key}-health-{run}.txt")
    log(f"[{key}] run {run}/{runs}: GET /health, wrk -t1 -c64 -d{d}s")
    cpu = Cpu(bench, server, os.path.join(bench.out, f"cpu-{key}-health-{run}.txt"))
    run_wrk(["-t1", "-c64", f"-d{d}s", "--latency", server.url("/health")], f)
    c = cpu.end()
    server.assert_alive(f"GET /health ({key})")
    w = report.parse_wrk(f)
    log(f"[{key}] GET /health: {w['rps']:.2f} req/s, p50 {w['p50']:.4f} ms, p99 {w['p99']:.4f} ms, "
        f"non-2xx {w['non2xx']}")
    if w["non2xx"]:
        bench.problem(f"[{key}] GET /health run {run}: {w['non2xx']} non-2xx responses")
    if w["sockerr"]:
        bench.problem(f"[{key}] GET /health run {run}: {w['sockerr']} socket errors (see {bench.rel(f)})")
    return {"health.rps": w["rps"], "health.p50": w["p50"], "health.p99": w["p99"],
            "health.non2xx": w["non2xx"], "health.sockerr": w["sockerr"], "health.cpu": c}


def run_orders(bench, server, key, run, runs, product, health, lua=None, lua_env=None, cluster=False):
    """Scenario 2 with 3: POST /api/orders qty 1 on PRODUCT, wrk -t1 -c64 (LUA, default
    bench/orders.lua, with LUA_ENV), CPU sampled, then the wait for PostgreSQL; compared with
    HEALTH, the health run just before it. Throughput counts reservations (202s), not answers:
    a 503 costs the server almost nothing. Returns the figures under orders.*, ratio,
    p99_ratio, lag.*."""
    d = bench.cfg.duration
    f = os.path.join(bench.out, f"wrk-{key}-orders-{run}.txt")
    log(f"[{key}] run {run}/{runs}: POST /api/orders (product {product}), wrk -t1 -c64 -d{d}s")
    cpu = Cpu(bench, server, os.path.join(bench.out, f"cpu-{key}-orders-{run}.txt"))
    dr = drain_run(bench, server, f, product,
                   ["wrk", "-t1", "-c64", f"-d{d}s", "--latency", "-s", lua or os.path.join(HELPERS, "orders.lua"),
                    server.url("/api/orders")], env=lua_env, cluster=cluster)
    c = cpu.end()
    server.assert_alive(f"POST /api/orders ({key})")
    w = report.parse_wrk(f)
    accepted = w["requests"] - w["non2xx"]
    ar = round(w["rps"] * accepted / w["requests"], 2) if w["requests"] > 0 else 0.0
    hr, hp = health["health.rps"], health["health.p99"]
    ratio = round(ar / hr, 4) if hr > 0 else 0.0
    p99_ratio = round(w["p99"] / hp, 3) if hp > 0 else 0.0
    added = dr["rows"] - dr["rows_before"]
    log(f"[{key}] POST /api/orders: {w['rps']:.2f} req/s ({ar:.2f} reservations/s, {ratio:.4f}x the health run "
        f"before it), p50 {w['p50']:.4f} ms, p99 {w['p99']:.4f} ms, non-2xx {w['non2xx']}; journal "
        f"{dr['journal_at_end']} at wrk end, every 202 a row after {dr['lag_ms']} ms ({added} rows added, "
        f"{accepted} 202s seen by wrk)")
    if w["non2xx"]:
        bench.problem(f"[{key}] POST /api/orders run {run}: {w['non2xx']} non-2xx responses (server totals "
                      f"so far: {server.order_statuses()})")
    if w["sockerr"]:
        bench.problem(f"[{key}] POST /api/orders run {run}: {w['sockerr']} socket errors (see {bench.rel(f)})")
    if added < accepted:
        bench.problem(f"[{key}] POST /api/orders run {run}: only {added} new rows for {accepted} 202 responses")
    return {"orders.rps": w["rps"], "orders.accepted_rps": ar, "ratio": ratio, "p99_ratio": p99_ratio,
            "orders.p50": w["p50"], "orders.p99": w["p99"], "orders.non2xx": w["non2xx"],
            "orders.sockerr": w["sockerr"], "lag.ms": dr["lag_ms"], "lag.rows": dr["rows"],
            "lag.added": added, "lag.accepted": accepted, "lag.journal": dr["journal_at_end"],
            "orders.cpu": c}


def serve_fresh(bench, binary, key, label, env=None):
    """A new server (LABEL), its idle RSS and I/O driver put under KEY (1 s after start)."""
    s = Server(bench, binary, label, env)
    time.sleep(1)
    rss, drv = s.rss_kb(), s.driver()
    bench.put(f"{key}.rss.idle_kb", rss)
    bench.put(f"{key}.driver", drv)
    log(f"[{key}] idle RSS {rss} kB; driver: {drv}")
    return s


class RssSampler(threading.Thread):
    """The VmRSS (kB) of a process every 0.1 s and, every second, its open descriptors, until
    stop() or the process ends; written to FILE as `rss` or `rss fds` lines."""

    def __init__(self, pid, file):
        super().__init__(daemon=True)
        self.pid, self.file = pid, file
        self.stopping = threading.Event()
        self.rss, self.fds = [], []

    def run(self):
        i = 0
        with open(self.file, "w") as f:
            while not self.stopping.is_set():
                try:
                    rss = next(int(ln.split()[1]) for ln in open(f"/proc/{self.pid}/status")
                               if ln.startswith("VmRSS:"))
                except (OSError, StopIteration):
                    break
                self.rss.append(rss)
                if i % 10 == 0:
                    try:
                        n = len(os.listdir(f"/proc/{self.pid}/fd"))
                    except OSError:
                        break
                    self.fds.append(n)
                    f.write(f"{rss} {n}\n")
                else:
                    f.write(f"{rss}\n")
                i += 1
                self.stopping.wait(0.1)

    def stop(self):
        self.stopping.set()
        self.join(5)
