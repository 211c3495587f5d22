//! Test harness: every test gets its own PostgreSQL database, its own Redis key prefix and
//! its own server process (the release-like binary cargo built for this test run), so tests
//! run in parallel without touching each other or the machine's data.
//!
//! Services: `DATABASE_URL`'s server (default 127.0.0.1:5432, user postgres) is used as the
//! admin connection to create `fs_test_*` databases; `REDIS_URL` (default 127.0.0.1:6379/0)
//! is shared, isolated by prefix. Tests that kill Redis start their own `redis-server`.
//!
//! Nothing here sleeps hoping work is done: `wait_until` polls for a state with a generous
//! deadline.

#![allow(dead_code)]

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-webhook-secret";
/// Generous: the machine is small and shared.
pub const DEADLINE: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}_{}_{n}_{nanos:x}", std::process::id())
}

fn pg_base() -> String {
    std::env::var("TEST_PG_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The URL of database `name` on the test PostgreSQL server.
pub fn pg_url(name: &str) -> String {
    let base = pg_base();
    let (head, _) = base.rsplit_once('/').expect("DATABASE_URL has a path");
    format!("{head}/{name}")
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Polls `f` until it returns `Some`, or panics with `what` after `DEADLINE`.
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An isolated database and Redis prefix. Dropping it removes both.
pub struct Env {
    pub db: String,
    pub db_url: String,
    /// One server's URL, or a cluster's seed nodes separated by commas.
    pub redis_url: String,
    /// `redis_url` names the nodes of a Redis Cluster (`FLASHSALE_REDIS_MODE=cluster`).
    pub cluster: bool,
    pub prefix: String,
}

impl Env {
    pub fn new() -> Env {
        Env::with_redis(redis_url())
    }

    pub fn with_redis(redis_url: String) -> Env {
        Env::create(redis_url, false)
    }

    /// An environment on the Redis Cluster whose nodes `urls` lists (comma-separated).
    pub fn with_cluster(urls: String) -> Env {
        Env::create(urls, true)
    }

    fn create(redis_url: String, cluster: bool) -> Env {
        let db = unique("fs_test");
        let mut admin = postgres::Client::connect(&pg_url("postgres"), postgres::NoTls)
            .expect("test PostgreSQL reachable (run scripts/services.sh)");
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        let env = Env {
            db_url: pg_url(&db),
            db,
            redis_url,
            cluster,
            prefix: unique("t"),
        };
        let status = env.command("migrate").output().unwrap();
        assert!(
            status.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        env
    }

    pub fn pg(&self) -> postgres::Client {
        postgres::Client::connect(&self.db_url, postgres::NoTls).unwrap()
    }

    /// A connection to the single Redis (not for a cluster: see [`Env::store`]).
    pub fn redis(&self) -> redis::Connection {
        assert!(!self.cluster, "Env::redis is for a single Redis");
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// A connection to wherever the keys are: the Redis, or the cluster (commands routed).
    pub fn store(&self) -> Box<dyn redis::ConnectionLike> {
        if self.cluster {
            let nodes: Vec<&str> = self.redis_url.split(',').collect();
            Box::new(
                redis::cluster::ClusterClient::new(nodes)
                    .unwrap()
                    .get_connection()
                    .unwrap(),
            )
        } else {
            Box::new(self.redis())
        }
    }

    /// `flashsale <cmd>` with this environment. `FLASHSALE_TEST_BIN` runs another binary
    /// (an older build, to see a test of a defence fail where the defence is missing).
    pub fn command(&self, cmd: &str) -> Command {
        let bin = std::env::var("FLASHSALE_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_flashsale").to_string());
        let mut c = Command::new(bin);
        c.arg(cmd)
            .env("DATABASE_URL", &self.db_url)
            .env("REDIS_URL", &self.redis_url)
            .env(
                "FLASHSALE_REDIS_MODE",
                if self.cluster { "cluster" } else { "single" },
            )
            .env("FLASHSALE_REDIS_PREFIX", &self.prefix)
            .env("PAYMENT_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "flashsale=info");
        c
    }

    /// Inserts a product with SQL, as an operator would; returns its id.
    pub fn product(&self, stock: i64, price_cents: i64) -> i64 {
        self.product_with(stock, price_cents, 10, None)
    }

    pub fn product_with(
        &self,
        stock: i64,
        price_cents: i64,
        max_per_order: i32,
        per_user_limit: Option<i32>,
    ) -> i64 {
        self.pg()
            .query_one(
                "INSERT INTO products (name, price_cents, stock, max_per_order, per_user_limit)
                 VALUES ('Test item', $1, $2, $3, $4) RETURNING id",
                &[&price_cents, &stock, &max_per_order, &per_user_limit],
            )
            .unwrap()
            .get(0)
    }

    pub fn key(&self, product: i64, suffix: &str) -> String {
        format!("{}:{{p:{product}}}:{suffix}", self.prefix)
    }

    /// Redis reservable stock, `None` when the product is not loaded.
    pub fn redis_stock(&self, product: i64) -> Option<i64> {
        redis::cmd("GET")
            .arg(self.key(product, "stock"))
            .query(&mut *self.store())
            .unwrap()
    }

    pub fn journal_len(&self, product: i64) -> i64 {
        redis::cmd("ZCARD")
            .arg(self.key(product, "journal"))
            .query(&mut *self.store())
            .unwrap()
    }

    pub fn pg_stock(&self, product: i64) -> i64 {
        self.pg()
            .query_one("SELECT stock FROM products WHERE id = $1", &[&product])
            .unwrap()
            .get(0)
    }

    pub fn pending_units(&self, product: i64) -> i64 {
        self.pg()
            .query_one(
                "SELECT COALESCE(sum(qty), 0)::int8 FROM orders WHERE product_id = $1 AND status = 'pending'",
                &[&product],
            )
            .unwrap()
            .get(0)
    }

    pub fn paid_units(&self, product: i64) -> i64 {
        self.pg()
            .query_one(
                "SELECT COALESCE(sum(qty), 0)::int8 FROM orders WHERE product_id = $1 AND status = 'paid'",
                &[&product],
            )
            .unwrap()
            .get(0)
    }

    pub fn order_row_count(&self) -> usize {
        let n: i64 = self
            .pg()
            .query_one("SELECT count(*) FROM orders", &[])
            .unwrap()
            .get(0);
        n as usize
    }

    pub fn order_row(&self, reference: &str) -> Option<(String, Option<String>, i32)> {
        self.pg()
            .query_opt(
                "SELECT status, cancel_reason, qty FROM orders WHERE order_reference = $1",
                &[&reference],
            )
            .unwrap()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
    }

    /// Waits until every reference has a row in PostgreSQL, and checks they are distinct.
    pub fn wait_rows(&self, refs: &[String]) {
        let want: Vec<&str> = refs.iter().map(String::as_str).collect();
        let mut pg = self.pg();
        wait_until("every 202 is a row", || {
            let n: i64 = pg
                .query_one(
                    "SELECT count(*) FROM orders WHERE order_reference = ANY($1)",
                    &[&want],
                )
                .unwrap()
                .get(0);
            (n as usize == want.len()).then_some(())
        });
        let distinct: std::collections::HashSet<&str> = want.iter().copied().collect();
        assert_eq!(distinct.len(), want.len(), "references are unique");
    }

    /// Waits until every change reached PostgreSQL (the journal is empty), then checks the
    /// conservation law and that stock was neither lost nor invented.
    pub fn assert_conserved(&self, product: i64, initial_stock: i64) {
        wait_until("journal drained", || {
            (self.journal_len(product) == 0).then_some(())
        });
        let redis = self.redis_stock(product).expect("product loaded");
        let pending = self.pending_units(product);
        let pg = self.pg_stock(product);
        assert!(redis >= 0, "negative reservable stock {redis}");
        assert_eq!(
            redis + pending,
            pg,
            "conservation: redis {redis} + pending {pending} != pg stock {pg}"
        );
        assert_eq!(
            pg + self.paid_units(product),
            initial_stock,
            "initial stock = stock + paid"
        );
        let out = self.command("reconcile").output().unwrap();
        assert!(
            out.status.success(),
            "reconcile reports drift:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&pg_url("postgres"), postgres::NoTls) {
            let _ =
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
        }
        // Each node of a cluster holds its own keys (a replica refuses the DEL: harmless).
        for url in self.redis_url.split(',') {
            let Ok(mut r) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
                continue;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut r)
                .unwrap_or_default();
            // On a cluster, keys of several slots cannot share one DEL.
            for chunk in keys.chunks(if self.cluster { 1 } else { 500 }) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut r);
            }
        }
    }
}

/// A running `flashsale serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
}

impl Server {
    pub fn start(env: &Env) -> Server {
        Server::start_with(env, &[])
    }

    pub fn start_with(env: &Env, vars: &[(&str, &str)]) -> Server {
        let log = std::env::temp_dir().join(format!("{}.log", unique("flashsale")));
        let mut c = env.command("serve");
        c.env("FLASHSALE_LISTEN", "127.0.0.1:0")
            .env("FLASHSALE_WORKERS", "2")
            .env("FLASHSALE_SHUTDOWN_GRACE_SECS", "5");
        for (k, v) in vars {
            c.env(k, v);
        }
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("flashsale listening on http://") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(DEADLINE) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Server {
            child: Some(child),
            addr,
            log,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                let _ = c.kill();
                panic!("server did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit on its own (within the deadline) and returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("running");
        wait_until("the server to exit", || c.try_wait().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("server log kept at {}", self.log.display());
        }
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

/// A keep-alive HTTP/1.1 client over one connection; reconnects when the server closed it.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    fn stream(&mut self) -> &mut BufReader<TcpStream> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr).unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s.set_nodelay(true).unwrap();
            self.conn = Some(BufReader::new(s));
        }
        self.conn.as_mut().unwrap()
    }

    /// Sends raw bytes and reads one response.
    pub fn raw(&mut self, bytes: &[u8]) -> Resp {
        self.try_raw(bytes).expect("a response")
    }

    /// Like `raw`, but a connection error (server killed) is `None` instead of a panic.
    pub fn try_raw(&mut self, bytes: &[u8]) -> Option<Resp> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr).ok()?;
            s.set_read_timeout(Some(DEADLINE)).ok()?;
            s.set_nodelay(true).ok()?;
            self.conn = Some(BufReader::new(s));
        }
        let s = self.stream();
        let r = s
            .get_mut()
            .write_all(bytes)
            .ok()
            .and_then(|_| read_response(s));
        match &r {
            None => self.conn = None,
            Some(r)
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close")) =>
            {
                self.conn = None
            }
            _ => {}
        }
        r
    }

    /// One order request that may fail at the connection level.
    pub fn try_order(&mut self, product: i64, qty: i64) -> Option<Resp> {
        let body = serde_json::json!({"product_id": product, "qty": qty}).to_string();
        let req = format!(
            "POST /api/orders HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.try_raw(req.as_bytes())
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes)
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    pub fn post_json(&mut self, path: &str, body: &Value) -> Resp {
        self.request("POST", path, &[], body.to_string().as_bytes())
    }

    pub fn order(&mut self, product: i64, qty: i64) -> Resp {
        self.post_json(
            "/api/orders",
            &serde_json::json!({"product_id": product, "qty": qty}),
        )
    }

    pub fn order_with(&mut self, body: &Value, key: Option<&str>) -> Resp {
        match key {
            Some(k) => self.request(
                "POST",
                "/api/orders",
                &[("Idempotency-Key", k)],
                body.to_string().as_bytes(),
            ),
            None => self.post_json("/api/orders", body),
        }
    }

    /// A signed webhook.
    pub fn webhook(&mut self, reference: &str, status: &str) -> Resp {
        let body = serde_json::json!({"order_reference": reference, "status": status}).to_string();
        let sig = sign(body.as_bytes());
        self.request(
            "POST",
            "/api/payments/webhook",
            &[("X-Payment-Signature", &sig)],
            body.as_bytes(),
        )
    }
}

pub fn sign(body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// Reads one HTTP/1.1 response with a Content-Length body.
pub fn read_response(s: &mut BufReader<TcpStream>) -> Option<Resp> {
    let mut line = String::new();
    if s.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        s.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    if status == 100 {
        return read_response(s);
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    Some(Resp {
        status,
        headers,
        body,
    })
}

/// A Redis server of the test's own, on a free port, without persistence unless asked.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
    pub dir: std::path::PathBuf,
    args: Vec<String>,
}

impl OwnRedis {
    pub fn start(extra: &[&str]) -> OwnRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = OwnRedis {
            port,
            child: None,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the server on the same port and directory.
    pub fn restart(&mut self) {
        let mut c = Command::new("redis-server");
        c.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .args(&self.args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.child = Some(
            c.spawn()
                .expect("redis-server installed (scripts/services.sh installs it)"),
        );
        let url = self.url();
        wait_until("own redis-server answers", || {
            let c = redis::Client::open(url.as_str()).ok()?;
            let mut conn = c.get_connection().ok()?;
            redis::cmd("PING").query::<String>(&mut conn).ok()
        });
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2, say: another client
/// address on the same machine).
pub fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: SocketAddr = format!("{from}:0").parse().expect("an IPv4 address");
    s.bind(&local.into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP proxy in front of a service, which a test can cut (every connection dropped, new ones
/// refused) and restore: "PostgreSQL unreachable" without touching the real server.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

struct ProxyState {
    up: bool,
    open: Vec<TcpStream>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            up: true,
            open: Vec::new(),
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let mut s = st.lock().unwrap();
                if !s.up {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                for sock in [&client, &server] {
                    if let Ok(c) = sock.try_clone() {
                        s.open.push(c);
                    }
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, state }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.up = false;
        for c in s.open.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.state.lock().unwrap().up = true;
    }
}

/// The test PostgreSQL server's address.
pub fn pg_addr() -> SocketAddr {
    let base = pg_base();
    let cfg: postgres::Config = base.parse().unwrap();
    let host = match cfg.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let host = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    format!("{host}:{port}").parse().unwrap()
}
