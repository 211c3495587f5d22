//! Configuration: one typed [`Config`], read from environment variables and validated at
//! start-up. Every default is a named constant that says why it is that number; an invalid
//! value stops start-up with a message naming the variable. The webhook secret never appears
//! in `Debug` output.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// `FLASHSALE_LISTEN`: loopback, so a first run exposes nothing to the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// `DATABASE_URL`: the local PostgreSQL that `scripts/services.sh` provides.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/flashsale";
/// `REDIS_URL`: the local Redis, database 0.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// `FLASHSALE_REDIS_PREFIX`: short, because it is part of every key.
pub const DEFAULT_REDIS_PREFIX: &str = "fs";
/// `FLASHSALE_HOLD_SECS`: ten minutes, the usual checkout window of a ticket drop.
pub const DEFAULT_HOLD_SECS: u64 = 600;
/// `FLASHSALE_QUEUE_CAPACITY`: about a second of peak reservations on a two-core machine
/// (~100 bytes each, so ~6 MiB): enough to ride out a PostgreSQL hiccup, small enough that
/// memory stays flat when PostgreSQL is down and orders get 503 instead.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// `FLASHSALE_BATCH_ROWS`: `cargo bench --bench writer` on a 2-core VM wrote ~127k rows/s
/// with 500-row COPY batches (~86k/s with INSERT … UNNEST), ~110k/s with 1000-row ones, ~80k/s
/// with 100-row ones: 500 is the knee.
pub const DEFAULT_BATCH_ROWS: usize = 500;
/// `FLASHSALE_BATCH_LINGER_MS`: under load batches fill on their own; when traffic is light,
/// a 2 ms wait saves transactions at a cost nobody notices.
pub const DEFAULT_BATCH_LINGER_MS: u64 = 2;
/// `FLASHSALE_HEADER_TIMEOUT_SECS`: a connection's first request head must arrive within this
/// time of the accept (whether or not a byte was sent), and every later one within this time
/// of its first byte, so neither silent connections nor one byte a second can hold a
/// descriptor.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// `FLASHSALE_IDLE_TIMEOUT_SECS`: keep-alive connections with no request for this long are
/// closed; longer than the usual 60 s of load balancers so they close first.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 75;
/// `FLASHSALE_MAX_CONNECTIONS_PER_IP`: enough for a proxy or a large NAT in front of many
/// buyers, far below what one client would need to exhaust the descriptors.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// `FLASHSALE_IPV6_PREFIX`: IPv6 clients are counted by their /64, the block one subscriber
/// (one home, one phone) usually holds; by /128 one such client would be 2^64 clients.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// `FLASHSALE_ADMIN_FAILURES_PER_MINUTE`: wrong admin tokens one address may send in a
/// minute before it gets 429 for the rest of it; an operator mistyping is never near it, and
/// guessing a 32-character token at 10 a minute would outlast the universe.
pub const DEFAULT_ADMIN_FAILURES_PER_MINUTE: u64 = 10;
/// The shortest admin token `serve` accepts: 32 characters (`openssl rand -hex 32` gives 64).
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;
/// Descriptors kept out of `FLASHSALE_MAX_CONNECTIONS`'s default for what the server itself
/// opens: listeners, Redis and PostgreSQL connections, io_uring instances, log files.
pub const FD_RESERVE: usize = 256;
/// `FLASHSALE_IDEMPOTENCY_TTL_SECS`: a day, longer than any client retries a request.
pub const DEFAULT_IDEMPOTENCY_TTL_SECS: u64 = 86_400;
/// `FLASHSALE_UNMATCHED_WEBHOOK_DAYS`: a week for a provider's webhook to find its order
/// (an order written by another tool, late) before the row is deleted.
pub const DEFAULT_UNMATCHED_WEBHOOK_DAYS: u64 = 7;
/// `FLASHSALE_SHUTDOWN_GRACE_SECS`: how long SIGTERM waits for in-flight requests.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Final order records stay in Redis this long after PostgreSQL has them (GET and webhook
/// repeats are answered from Redis meanwhile; later ones from PostgreSQL).
pub const FINAL_RECORD_TTL_SECS: u64 = 3_600;
/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// A request head larger than this is refused with 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// `FLASHSALE_BUYER_AUTH`: where the buyer's identity comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuyerAuth {
    /// `none`: the body's `user_id`, taken as given (a gateway authenticated the buyer, or a
    /// demo).
    None,
    /// `jwt`: a bearer token's `sub`, verified with these keys and claims.
    Jwt(JwtConfig),
}

/// How bearer tokens are verified (`FLASHSALE_JWT_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtConfig {
    /// `FLASHSALE_JWT_HS256_SECRET`: the HMAC key of HS256 tokens.
    pub hs256_secret: Option<Secret>,
    /// `FLASHSALE_JWT_PUBLIC_KEYS`: a JWKS file of Ed25519, P-256 and RSA public keys.
    pub public_keys: Option<std::path::PathBuf>,
    /// `FLASHSALE_JWT_ISSUER`: when set, the `iss` every token must carry.
    pub issuer: Option<String>,
    /// `FLASHSALE_JWT_AUDIENCE`: when set, an `aud` every token must carry.
    pub audience: Option<String>,
}

/// A rate limit: `per_second` on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Where Redis is and which database to select.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    /// `SELECT`ed on every (re)connection.
    pub db: u32,
    /// Username for `AUTH`, if the URL has one.
    pub username: Option<String>,
    /// Password for `AUTH`, if the URL has one; never logged.
    pub password: Option<Secret>,
}

impl RedisTarget {
    /// Parses `redis://[user[:password]@]host[:port][/db]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| "must start with redis://".to_string())?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, d)) => (
                hp,
                d.parse::<u32>()
                    .map_err(|_| format!("database {d:?} is not a number"))?,
            ),
            None => (hostpart, 0),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or("unclosed [ in host")?;
            (h.to_string(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (hostport.to_string(), ""),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = if port.is_empty() {
            6379
        } else {
            port.parse::<u16>()
                .map_err(|_| format!("port {port:?} is not a number"))?
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| u.to_string()),
                    Some(Secret(p.to_string())),
                ),
                None => (None, Some(Secret(a.to_string()))),
            },
        };
        Ok(RedisTarget {
            host,
            port,
            db,
            username,
            password,
        })
    }
}

/// A value that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A connection URL that may hold a password: used as the `str` it is, printed by `Debug`
/// with its password replaced (see [`redact`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Url(String);

impl std::ops::Deref for Url {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// `FLASHSALE_LISTEN`: every worker binds its own socket here with SO_REUSEPORT.
    pub listen: SocketAddr,
    /// `FLASHSALE_WORKERS`: one monoio runtime per worker thread.
    pub workers: usize,
    /// `DATABASE_URL`.
    pub database_url: Url,
    /// `REDIS_URL`, parsed: the server, or in cluster mode the first seed node (whose user,
    /// password and database every node connection uses).
    pub redis: RedisTarget,
    /// `FLASHSALE_REDIS_MODE=cluster`: the seed nodes of a Redis Cluster (all of
    /// `REDIS_URL`); `None` for a single server.
    pub redis_cluster: Option<Vec<RedisTarget>>,
    /// `FLASHSALE_REDIS_PREFIX`: the start of every key, so deployments can share a server.
    pub redis_prefix: String,
    /// `PAYMENT_WEBHOOK_SECRET`: required by `serve`, unused by the other commands.
    pub webhook_secret: Option<Secret>,
    /// `FLASHSALE_HOLD_SECS`: how long a reservation waits for its payment.
    pub hold: Duration,
    /// `FLASHSALE_QUEUE_CAPACITY`: bound of the handoff to the writer.
    pub queue_capacity: usize,
    /// `FLASHSALE_BATCH_ROWS`: most rows per writer transaction.
    pub batch_rows: usize,
    /// `FLASHSALE_BATCH_LINGER_MS`: longest wait for a batch to fill.
    pub batch_linger: Duration,
    /// `FLASHSALE_HEADER_TIMEOUT_SECS`: time allowed for a whole request after its first byte.
    pub header_timeout: Duration,
    /// `FLASHSALE_IDLE_TIMEOUT_SECS`: idle keep-alive connections are closed after this.
    pub idle_timeout: Duration,
    /// `FLASHSALE_SHUTDOWN_GRACE_SECS`: time given to in-flight requests on SIGTERM.
    pub shutdown_grace: Duration,
    /// `FLASHSALE_MAX_CONNECTIONS`: open connections in all; `None` derives it from the
    /// open-file limit at start-up (less [`FD_RESERVE`]).
    pub max_connections: Option<usize>,
    /// `FLASHSALE_MAX_CONNECTIONS_PER_IP`: open connections from one client address.
    pub max_connections_per_ip: usize,
    /// `FLASHSALE_IDEMPOTENCY_TTL_SECS`: how long an Idempotency-Key is remembered.
    pub idempotency_ttl: Duration,
    /// `FLASHSALE_UNMATCHED_WEBHOOK_DAYS`: how long a webhook for an unknown reference waits.
    pub unmatched_webhook_days: u64,
    /// `FLASHSALE_BUYER_AUTH` and `FLASHSALE_JWT_*`.
    pub buyer_auth: BuyerAuth,
    /// `FLASHSALE_RATE_LIMIT_IP[_BURST]`: requests per client address (off when `None`).
    pub rate_limit_ip: Option<RateLimit>,
    /// `FLASHSALE_RATE_LIMIT_BUYER[_BURST]`: reservations per buyer (off when `None`).
    pub rate_limit_buyer: Option<RateLimit>,
    /// `FLASHSALE_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `FLASHSALE_ADMIN_TOKEN`: the bearer token of the admin API; `None` disables it.
    pub admin_token: Option<Secret>,
    /// `FLASHSALE_ADMIN_FAILURES_PER_MINUTE`: wrong admin tokens per address and minute.
    pub admin_failures_per_minute: u32,
    /// `FLASHSALE_IPV6_PREFIX`: the bits of an IPv6 address that name one client for the
    /// rate limits, the connection caps and the admin failures.
    pub ipv6_prefix: u8,
    /// `FLASHSALE_EVENT_RETRY_SECS`: the delays between the attempts of an event delivery
    /// (N delays, N + 1 attempts).
    pub event_retry: Vec<Duration>,
    /// `FLASHSALE_EVENT_TIMEOUT_SECS`: how long a receiver has to answer a delivery.
    pub event_timeout: Duration,
    /// `FLASHSALE_EVENT_RETENTION_DAYS`: how long an event is kept after its last delivery.
    pub event_retention_days: u64,
}

/// `FLASHSALE_EVENT_RETRY_SECS`'s default: eight attempts over about 24 hours.
pub const DEFAULT_EVENT_RETRY_SECS: &str = "5,300,1800,7200,18000,36000,36000";

/// The delays of `FLASHSALE_EVENT_RETRY_SECS`: 1 to 20 whole numbers of seconds, each from
/// 1 to 86400, comma-separated.
fn retry_delays(v: &str) -> Result<Vec<Duration>, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "FLASHSALE_EVENT_RETRY_SECS={v:?}: expected 1 to 20 comma-separated whole numbers of seconds from 1 to 86400"
        ))
    };
    let delays: Vec<Duration> = v
        .split(',')
        .map(|s| match s.trim().parse::<u64>() {
            Ok(n) if (1..=86_400).contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(bad()),
        })
        .collect::<Result<_, _>>()?;
    if delays.is_empty() || delays.len() > 20 {
        return Err(bad());
    }
    Ok(delays)
}

/// A configuration error: names the variable and says what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let bad = |k: &str, v: &str, why: &str| ConfigError(format!("{k}={:?}: {why}", redact(v)));

        let listen_s = var("FLASHSALE_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_s.parse::<SocketAddr>().map_err(|_| {
            bad(
                "FLASHSALE_LISTEN",
                &listen_s,
                "expected host:port, e.g. 127.0.0.1:8080",
            )
        })?;

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = num(&var, "FLASHSALE_WORKERS", cores as u64, 1, 1024)? as usize;

        let database_url = var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(bad(
                "DATABASE_URL",
                &database_url,
                "must start with postgres://",
            ));
        }
        let redis_url = var("REDIS_URL").unwrap_or_else(|| DEFAULT_REDIS_URL.into());
        let redis_mode = var("FLASHSALE_REDIS_MODE").unwrap_or_else(|| "single".into());
        let (redis, redis_cluster) = match redis_mode.as_str() {
            "single" => (
                RedisTarget::parse(&redis_url).map_err(|why| bad("REDIS_URL", &redis_url, &why))?,
                None,
            ),
            "cluster" => {
                let seeds = redis_url
                    .split(',')
                    .map(|u| RedisTarget::parse(u.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|why| bad("REDIS_URL", &redis_url, &why))?;
                if seeds.iter().any(|s| s.db != 0) {
                    return Err(bad(
                        "REDIS_URL",
                        &redis_url,
                        "a Redis Cluster has database 0 only",
                    ));
                }
                (seeds[0].clone(), Some(seeds))
            }
            _ => {
                return Err(bad(
                    "FLASHSALE_REDIS_MODE",
                    &redis_mode,
                    "use single or cluster",
                ));
            }
        };

        let redis_prefix =
            var("FLASHSALE_REDIS_PREFIX").unwrap_or_else(|| DEFAULT_REDIS_PREFIX.into());
        if redis_prefix.len() > 64
            || !redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return Err(bad(
                "FLASHSALE_REDIS_PREFIX",
                &redis_prefix,
                "use up to 64 letters, digits, '_', '-', '.', ':'",
            ));
        }

        // An empty secret is treated as missing: an empty HMAC key would accept forgeries.
        let webhook_secret = var("PAYMENT_WEBHOOK_SECRET").map(Secret);

        let hold = Duration::from_secs(num(
            &var,
            "FLASHSALE_HOLD_SECS",
            DEFAULT_HOLD_SECS,
            1,
            7 * 86_400,
        )?);
        let queue_capacity = num(
            &var,
            "FLASHSALE_QUEUE_CAPACITY",
            DEFAULT_QUEUE_CAPACITY as u64,
            1,
            10_000_000,
        )? as usize;
        let batch_rows = num(
            &var,
            "FLASHSALE_BATCH_ROWS",
            DEFAULT_BATCH_ROWS as u64,
            1,
            100_000,
        )? as usize;
        let batch_linger = Duration::from_millis(num(
            &var,
            "FLASHSALE_BATCH_LINGER_MS",
            DEFAULT_BATCH_LINGER_MS,
            0,
            10_000,
        )?);
        let header_timeout = Duration::from_secs(num(
            &var,
            "FLASHSALE_HEADER_TIMEOUT_SECS",
            DEFAULT_HEADER_TIMEOUT_SECS,
            1,
            3_600,
        )?);
        let idle_timeout = Duration::from_secs(num(
            &var,
            "FLASHSALE_IDLE_TIMEOUT_SECS",
            DEFAULT_IDLE_TIMEOUT_SECS,
            1,
            86_400,
        )?);
        let shutdown_grace = Duration::from_secs(num(
            &var,
            "FLASHSALE_SHUTDOWN_GRACE_SECS",
            DEFAULT_SHUTDOWN_GRACE_SECS,
            0,
            3_600,
        )?);

        let max_connections = match var("FLASHSALE_MAX_CONNECTIONS") {
            None => None,
            Some(_) => Some(num(&var, "FLASHSALE_MAX_CONNECTIONS", 0, 1, 10_000_000)? as usize),
        };
        let max_connections_per_ip = num(
            &var,
            "FLASHSALE_MAX_CONNECTIONS_PER_IP",
            DEFAULT_MAX_CONNECTIONS_PER_IP as u64,
            1,
            10_000_000,
        )? as usize;
        let idempotency_ttl = Duration::from_secs(num(
            &var,
            "FLASHSALE_IDEMPOTENCY_TTL_SECS",
            DEFAULT_IDEMPOTENCY_TTL_SECS,
            1,
            30 * 86_400,
        )?);
        let unmatched_webhook_days = num(
            &var,
            "FLASHSALE_UNMATCHED_WEBHOOK_DAYS",
            DEFAULT_UNMATCHED_WEBHOOK_DAYS,
            1,
            3_650,
        )?;
        let event_retry = retry_delays(
            &var("FLASHSALE_EVENT_RETRY_SECS").unwrap_or(DEFAULT_EVENT_RETRY_SECS.into()),
        )?;
        let event_timeout =
            Duration::from_secs(num(&var, "FLASHSALE_EVENT_TIMEOUT_SECS", 10, 1, 300)?);
        let event_retention_days = num(&var, "FLASHSALE_EVENT_RETENTION_DAYS", 30, 1, 3_650)?;

        let buyer_auth = match var("FLASHSALE_BUYER_AUTH").as_deref() {
            None | Some("none") => BuyerAuth::None,
            Some("jwt") => {
                let jwt = JwtConfig {
                    hs256_secret: var("FLASHSALE_JWT_HS256_SECRET").map(Secret),
                    public_keys: var("FLASHSALE_JWT_PUBLIC_KEYS").map(Into::into),
                    issuer: var("FLASHSALE_JWT_ISSUER"),
                    audience: var("FLASHSALE_JWT_AUDIENCE"),
                };
                if jwt.hs256_secret.is_none() && jwt.public_keys.is_none() {
                    return Err(ConfigError(
                        "FLASHSALE_BUYER_AUTH=jwt needs FLASHSALE_JWT_HS256_SECRET or \
                         FLASHSALE_JWT_PUBLIC_KEYS (a JWKS file): there is no key to verify tokens with"
                            .into(),
                    ));
                }
                BuyerAuth::Jwt(jwt)
            }
            Some(other) => {
                return Err(bad("FLASHSALE_BUYER_AUTH", other, "expected none or jwt"));
            }
        };
        let admin_token = match var("FLASHSALE_ADMIN_TOKEN") {
            None => None,
            Some(t)
                if t.chars().count() < MIN_ADMIN_TOKEN_LEN
                    || t.chars().any(|c| !c.is_ascii_graphic()) =>
            {
                return Err(ConfigError(format!(
                    "FLASHSALE_ADMIN_TOKEN: expected at least {MIN_ADMIN_TOKEN_LEN} visible ASCII \
                     characters (a random one: `openssl rand -hex 32`); the value is not shown"
                )));
            }
            Some(t) => Some(Secret(t)),
        };
        let admin_failures_per_minute = num(
            &var,
            "FLASHSALE_ADMIN_FAILURES_PER_MINUTE",
            DEFAULT_ADMIN_FAILURES_PER_MINUTE,
            1,
            100_000,
        )? as u32;
        let ipv6_prefix = num(
            &var,
            "FLASHSALE_IPV6_PREFIX",
            u64::from(DEFAULT_IPV6_PREFIX),
            16,
            128,
        )? as u8;
        let rate_limit_ip = rate_limit(&var, "FLASHSALE_RATE_LIMIT_IP")?;
        let rate_limit_buyer = rate_limit(&var, "FLASHSALE_RATE_LIMIT_BUYER")?;
        let trusted_proxies = match var("FLASHSALE_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            bad(
                                "FLASHSALE_TRUSTED_PROXIES",
                                &list,
                                &format!("{s:?} is not an address or CIDR (10.0.0.0/8, ::1)"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };

        Ok(Config {
            listen,
            workers,
            database_url: Url(database_url),
            redis,
            redis_cluster,
            redis_prefix,
            webhook_secret,
            hold,
            queue_capacity,
            batch_rows,
            batch_linger,
            header_timeout,
            idle_timeout,
            shutdown_grace,
            max_connections,
            max_connections_per_ip,
            idempotency_ttl,
            unmatched_webhook_days,
            event_retry,
            event_timeout,
            event_retention_days,
            buyer_auth,
            rate_limit_ip,
            rate_limit_buyer,
            trusted_proxies,
            admin_token,
            admin_failures_per_minute,
            ipv6_prefix,
        })
    }

    /// `serve` refuses to start without a webhook secret: an empty or default key would let
    /// anyone forge payments.
    pub fn require_secret(&self) -> Result<&Secret, ConfigError> {
        self.webhook_secret.as_ref().ok_or_else(|| {
            ConfigError(
                "PAYMENT_WEBHOOK_SECRET is not set: `flashsale serve` needs the payment provider's \
                 HMAC key to verify webhooks (there is no default)"
                    .into(),
            )
        })
    }
}

/// `v` with the passwords of its URLs (`scheme://user:password@host`, `?password=`) replaced
/// by `***`, so an error message never shows a secret. Anything else is kept as it is.
pub fn redact(v: &str) -> String {
    v.split(',')
        .map(|url| {
            let mut out = url.to_string();
            if let Some(scheme_end) = out.find("://") {
                let rest = scheme_end + 3;
                let authority_end = out[rest..]
                    .find(['/', '?', '#'])
                    .map_or(out.len(), |i| rest + i);
                if let Some(at) = out[rest..authority_end].rfind('@') {
                    let at = rest + at;
                    let userinfo = &out[rest..at];
                    let redacted = match userinfo.split_once(':') {
                        Some((user, _)) => format!("{user}:***"),
                        // `redis://secret@host`: Redis takes a lone userinfo as the password.
                        None if out.starts_with("redis") => "***".to_string(),
                        None => userinfo.to_string(),
                    };
                    out.replace_range(rest..at, &redacted);
                }
            }
            while let Some(i) = out.to_ascii_lowercase().find("password=") {
                let start = i + "password=".len();
                let end = out[start..].find('&').map_or(out.len(), |e| start + e);
                if &out[start..end] == "***" {
                    break;
                }
                out.replace_range(start..end, "***");
            }
            out
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `<key>` requests per second (0: off) and `<key>_BURST` (default: one second's worth).
fn rate_limit(
    var: &impl Fn(&str) -> Option<String>,
    key: &str,
) -> Result<Option<RateLimit>, ConfigError> {
    let per_second = num(var, key, 0, 0, 10_000_000)? as u32;
    let burst_key = format!("{key}_BURST");
    let burst = num(var, &burst_key, u64::from(per_second.max(1)), 1, 10_000_000)? as u32;
    Ok((per_second > 0).then_some(RateLimit { per_second, burst }))
}

fn num(
    var: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match var(key) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError(format!(
                "{key}={v:?}: expected a whole number from {min} to {max}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_errors_never_show_passwords() {
        assert_eq!(
            redact("redis://u:s3cret@h:1/0,redis://:pw@h2:2"),
            "redis://u:***@h:1/0,redis://:***@h2:2"
        );
        assert_eq!(redact("redis://s3cret@h/0"), "redis://***@h/0");
        assert_eq!(redact("postgres://app@h/db"), "postgres://app@h/db");
        assert_eq!(
            redact("postgres://app:pw@h/db?password=x&sslmode=y"),
            "postgres://app:***@h/db?password=***&sslmode=y"
        );
        assert_eq!(redact("127.0.0.1:8080"), "127.0.0.1:8080");
        let e = cfg(&[("REDIS_URL", "redis://u:s3cret@h:notaport/0")]).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("REDIS_URL"), "{e}");
    }
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_operator_table() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(&*c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(
            c.redis,
            RedisTarget::parse("redis://127.0.0.1:6379/0").unwrap()
        );
        assert!(c.redis_cluster.is_none());
        assert_eq!(c.redis_prefix, "fs");
        assert_eq!(c.hold, Duration::from_secs(600));
        assert!(c.webhook_secret.is_none());
        assert!(c.require_secret().is_err());
        assert!(c.workers >= 1);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (k, v) in [
            ("FLASHSALE_LISTEN", "nope"),
            ("FLASHSALE_WORKERS", "0"),
            ("FLASHSALE_HOLD_SECS", "-5"),
            ("REDIS_URL", "http://x"),
            ("FLASHSALE_REDIS_MODE", "sentinel"),
            ("DATABASE_URL", "mysql://x"),
            ("FLASHSALE_REDIS_PREFIX", "has space"),
            ("FLASHSALE_QUEUE_CAPACITY", "lots"),
            ("FLASHSALE_MAX_CONNECTIONS", "0"),
            ("FLASHSALE_MAX_CONNECTIONS_PER_IP", "x"),
            ("FLASHSALE_IDEMPOTENCY_TTL_SECS", "0"),
            ("FLASHSALE_UNMATCHED_WEBHOOK_DAYS", "-1"),
            ("FLASHSALE_BUYER_AUTH", "oauth"),
            ("FLASHSALE_RATE_LIMIT_IP", "fast"),
            ("FLASHSALE_RATE_LIMIT_BUYER_BURST", "0"),
            ("FLASHSALE_TRUSTED_PROXIES", "10.0.0.0/8, example.com"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err();
            assert!(e.0.starts_with(k), "{e}");
        }
    }

    #[test]
    fn buyer_auth_limits_and_proxies() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.buyer_auth, BuyerAuth::None);
        assert_eq!((c.rate_limit_ip, c.rate_limit_buyer), (None, None));
        assert!(c.trusted_proxies.is_empty());
        let e = cfg(&[("FLASHSALE_BUYER_AUTH", "jwt")]).unwrap_err();
        assert!(e.0.contains("FLASHSALE_JWT_HS256_SECRET"), "{e}");
        let c = cfg(&[
            ("FLASHSALE_BUYER_AUTH", "jwt"),
            ("FLASHSALE_JWT_HS256_SECRET", "s3cret"),
            ("FLASHSALE_RATE_LIMIT_IP", "20"),
            ("FLASHSALE_RATE_LIMIT_BUYER", "2"),
            ("FLASHSALE_RATE_LIMIT_BUYER_BURST", "5"),
            ("FLASHSALE_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,::1"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            c.rate_limit_ip,
            Some(RateLimit {
                per_second: 20,
                burst: 20
            })
        );
        assert_eq!(
            c.rate_limit_buyer,
            Some(RateLimit {
                per_second: 2,
                burst: 5
            })
        );
        assert_eq!(c.trusted_proxies.len(), 3);
    }

    #[test]
    fn secret_is_not_printed() {
        let c = cfg(&[
            ("PAYMENT_WEBHOOK_SECRET", "hunter2"),
            ("FLASHSALE_ADMIN_TOKEN", "adm1n-0123456789abcdef-0123456789"),
            ("DATABASE_URL", "postgres://app:pgpass@h/db"),
            ("REDIS_URL", "redis://u:rpass@h:6379/0"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        for secret in ["hunter2", "adm1n", "pgpass", "rpass"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert_eq!(c.require_secret().unwrap().expose(), "hunter2");
    }

    #[test]
    fn cluster_seeds() {
        let c = cfg(&[
            ("FLASHSALE_REDIS_MODE", "cluster"),
            (
                "REDIS_URL",
                "redis://:pw@127.0.0.1:7000, redis://:pw@127.0.0.1:7001",
            ),
        ])
        .unwrap();
        let seeds = c.redis_cluster.unwrap();
        assert_eq!(seeds.len(), 2);
        assert_eq!((seeds[1].port, c.redis.port), (7001, 7000));
        assert_eq!(seeds[1].password.as_ref().unwrap().expose(), "pw");
        let err = cfg(&[
            ("FLASHSALE_REDIS_MODE", "cluster"),
            ("REDIS_URL", "redis://127.0.0.1:7000/2"),
        ])
        .unwrap_err();
        assert!(err.0.contains("database 0"), "{}", err.0);
    }

    #[test]
    fn redis_urls() {
        let t = RedisTarget::parse("redis://:pw@10.0.0.1:7000/3").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("10.0.0.1", 7000, 3));
        assert_eq!(t.password.unwrap().expose(), "pw");
        let t = RedisTarget::parse("redis://localhost").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("localhost", 6379, 0));
        assert!(RedisTarget::parse("redis://h:port/0").is_err());
        assert!(RedisTarget::parse("redis://h:1/x").is_err());
    }
}
