//! The Lua scripts of `lua/`, how to call them and how to read their replies.
//!
//! Each script is sent as EVALSHA with its SHA-1 computed here; a Redis that does not know it
//! (restarted, or `SCRIPT FLUSH`) answers NOSCRIPT and the caller resends the same call as
//! EVAL, which also caches it. `lib.lua` is prepended to the scripts that use its helpers.
//!
//! Decoding is pure and unit-tested: a reply that does not have the documented shape is a
//! [`ReplyError`] (a bug or a foreign script under our name), never a panic.

use crate::domain::{OrderRecord, OrderState, ProductId};
use crate::redis::cmd::push_bulk;
use crate::redis::{Keys, ProductKeys};
use redis_async::resp::RespValue;
use std::sync::OnceLock;

/// The atomic operations, one per file in `lua/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptId {
    Reserve,
    Pay,
    Fail,
    Expire,
    Load,
    Adopt,
    Product,
    Invalidate,
}

const LIB: &str = include_str!("../../lua/lib.lua");

impl ScriptId {
    pub const ALL: [ScriptId; 8] = [
        ScriptId::Reserve,
        ScriptId::Pay,
        ScriptId::Fail,
        ScriptId::Expire,
        ScriptId::Load,
        ScriptId::Adopt,
        ScriptId::Product,
        ScriptId::Invalidate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScriptId::Reserve => "reserve",
            ScriptId::Pay => "pay",
            ScriptId::Fail => "fail",
            ScriptId::Expire => "expire",
            ScriptId::Load => "load",
            ScriptId::Adopt => "adopt",
            ScriptId::Product => "product",
            ScriptId::Invalidate => "invalidate",
        }
    }

    fn source(self) -> (&'static str, bool) {
        match self {
            ScriptId::Reserve => (include_str!("../../lua/reserve.lua"), true),
            ScriptId::Pay => (include_str!("../../lua/pay.lua"), true),
            ScriptId::Fail => (include_str!("../../lua/fail.lua"), true),
            ScriptId::Expire => (include_str!("../../lua/expire.lua"), true),
            ScriptId::Load => (include_str!("../../lua/load.lua"), true),
            ScriptId::Adopt => (include_str!("../../lua/adopt.lua"), true),
            ScriptId::Product => (include_str!("../../lua/product.lua"), false),
            ScriptId::Invalidate => (include_str!("../../lua/invalidate.lua"), true),
        }
    }

    /// The text sent to Redis.
    pub fn body(self) -> &'static str {
        &compiled()[self as usize].0
    }

    /// The SHA-1 of `body`, for EVALSHA.
    pub fn sha(self) -> &'static str {
        &compiled()[self as usize].1
    }
}

fn compiled() -> &'static [(String, String)] {
    static C: OnceLock<Vec<(String, String)>> = OnceLock::new();
    C.get_or_init(|| {
        ScriptId::ALL
            .iter()
            .map(|s| {
                let (src, with_lib) = s.source();
                let body = if with_lib {
                    format!("{LIB}\n{src}")
                } else {
                    src.to_string()
                };
                let sha = sha1_smol::Sha1::from(body.as_bytes()).digest().to_string();
                (body, sha)
            })
            .collect()
    })
}

/// One script invocation, encoded once and sendable as EVALSHA or, after NOSCRIPT, as EVAL.
#[derive(Debug, Clone)]
pub struct ScriptCall {
    pub script: ScriptId,
    nkeys: usize,
    nargs: usize,
    /// Keys then arguments, already as RESP bulk strings.
    tail: Vec<u8>,
}

impl ScriptCall {
    pub fn new(script: ScriptId) -> Self {
        ScriptCall {
            script,
            nkeys: 0,
            nargs: 0,
            tail: Vec::with_capacity(256),
        }
    }

    /// Adds a key; every key comes before the first argument.
    pub fn key(&mut self, k: &str) -> &mut Self {
        debug_assert_eq!(self.nargs, 0, "keys must precede arguments");
        push_bulk(&mut self.tail, k.as_bytes());
        self.nkeys += 1;
        self
    }

    pub fn arg(&mut self, a: impl AsRef<[u8]>) -> &mut Self {
        push_bulk(&mut self.tail, a.as_ref());
        self.nargs += 1;
        self
    }

    pub fn int(&mut self, n: i64) -> &mut Self {
        self.arg(itoa::Buffer::new().format(n).as_bytes())
    }

    /// The RESP bytes: EVALSHA, or EVAL with the whole script when `with_body`.
    pub fn encode(&self, with_body: bool) -> Vec<u8> {
        let (verb, what) = if with_body {
            ("EVAL", self.script.body())
        } else {
            ("EVALSHA", self.script.sha())
        };
        let mut out = Vec::with_capacity(self.tail.len() + what.len() + 48);
        out.push(b'*');
        out.extend_from_slice(
            itoa::Buffer::new()
                .format(3 + self.nkeys + self.nargs)
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        push_bulk(&mut out, verb.as_bytes());
        push_bulk(&mut out, what.as_bytes());
        push_bulk(&mut out, itoa::Buffer::new().format(self.nkeys).as_bytes());
        out.extend_from_slice(&self.tail);
        out
    }
}

/// True for the error Redis gives an EVALSHA of a script it does not hold.
pub fn is_noscript(e: &str) -> bool {
    e.starts_with("NOSCRIPT")
}

/// A reply of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError(pub String);

impl std::error::Error for ReplyError {}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected Redis reply: {}", self.0)
    }
}

fn bad(what: &str, v: &RespValue) -> ReplyError {
    ReplyError(format!("{what}: {v:?}"))
}

pub fn as_int(v: &RespValue) -> Result<i64, ReplyError> {
    match v {
        RespValue::Integer(i) => Ok(*i),
        RespValue::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("integer", v)),
        _ => Err(bad("integer", v)),
    }
}

pub fn as_string(v: RespValue) -> Result<String, ReplyError> {
    match v {
        RespValue::BulkString(b) => {
            String::from_utf8(b).map_err(|e| ReplyError(format!("utf-8: {e}")))
        }
        RespValue::SimpleString(s) => Ok(s),
        other => Err(bad("string", &other)),
    }
}

fn array(v: RespValue, what: &str) -> Result<Vec<RespValue>, ReplyError> {
    match v {
        RespValue::Array(a) => Ok(a),
        other => Err(bad(what, &other)),
    }
}

/// Reply codes shared by the scripts (see their headers).
const NOT_LOADED: i64 = 7;
const NOT_FOUND: i64 = 8;

// ---------------------------------------------------------------------------------------
// reserve

/// One reservation request inside a `reserve.lua` call.
#[derive(Debug, Clone)]
pub struct ReserveRequest<'a> {
    pub reference: &'a str,
    pub qty: i64,
    /// `""` when the client named no user.
    pub user: &'a str,
    pub idempotency_key: Option<&'a str>,
}

/// Builds a `reserve.lua` call for the requests, all for product `pid`.
pub fn reserve_call(
    keys: &Keys,
    pk: &ProductKeys,
    pid: ProductId,
    hold_ms: i64,
    reqs: &[ReserveRequest<'_>],
) -> ScriptCall {
    let mut c = ScriptCall::new(ScriptId::Reserve);
    c.key(&pk.stock)
        .key(&pk.product)
        .key(&pk.pending)
        .key(&pk.journal)
        .key(&pk.users);
    for r in reqs {
        c.key(&keys.order(pid, r.reference));
        // Without an idempotency key the slot still needs a key of this product's slot.
        match r.idempotency_key {
            Some(k) => c.key(&keys.idem(pid, k)),
            None => c.key(&pk.stock),
        };
    }
    c.int(hold_ms).int(reqs.len() as i64);
    for r in reqs {
        c.arg(r.reference)
            .int(r.qty)
            .arg(r.user)
            .arg(if r.idempotency_key.is_some() {
                "1"
            } else {
                "0"
            });
    }
    c
}

/// The outcome of one reservation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveReply {
    /// Reserved under the reference the request carried.
    Reserved {
        amount_cents: i64,
        expires_at_ms: i64,
        created_at_ms: i64,
    },
    /// The same Idempotency-Key and body reserved before: answer that order again.
    Replayed {
        reference: String,
        qty: i64,
        amount_cents: i64,
        expires_at_ms: i64,
        created_at_ms: i64,
    },
    InsufficientStock,
    LimitReached,
    UserRequired,
    QtyTooLarge {
        max: i64,
    },
    IdempotencyKeyReused,
}

/// What one `reserve.lua` call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveBatch {
    /// The journal member covering every reservation of the call (`None` if none).
    pub journal: Option<String>,
    /// One reply per request, in order.
    pub replies: Vec<ReserveReply>,
}

/// Decodes a `reserve.lua` reply for `n` requests; `None` means the product is not loaded.
pub fn decode_reserve(v: RespValue, n: usize) -> Result<Option<ReserveBatch>, ReplyError> {
    if let RespValue::Integer(NOT_LOADED) = v {
        return Ok(None);
    }
    let items = array(v, "reserve reply")?;
    if items.len() != n + 3 {
        return Err(ReplyError(format!(
            "reserve: {} items for {n} requests",
            items.len()
        )));
    }
    let mut it = items.into_iter();
    let mut next = || {
        it.next()
            .ok_or_else(|| ReplyError("short reserve reply".into()))
    };
    let expires_at_ms = as_int(&next()?)?;
    let created_at_ms = as_int(&next()?)?;
    let journal = as_string(next()?)?;
    let num = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| ReplyError(format!("number {s:?} in reserve reply")))
    };
    let mut replies = Vec::with_capacity(n);
    for _ in 0..n {
        let text = as_string(next()?)?;
        let mut f = text.split('|');
        let code = f.next().unwrap_or_default();
        let mut field = || {
            f.next()
                .ok_or_else(|| ReplyError(format!("short reserve item {text:?}")))
        };
        replies.push(match code {
            "0" => ReserveReply::Reserved {
                amount_cents: num(field()?)?,
                expires_at_ms,
                created_at_ms,
            },
            "1" => ReserveReply::Replayed {
                reference: field()?.to_string(),
                qty: num(field()?)?,
                amount_cents: num(field()?)?,
                expires_at_ms: num(field()?)?,
                created_at_ms: num(field()?)?,
            },
            "2" => ReserveReply::InsufficientStock,
            "3" => ReserveReply::LimitReached,
            "4" => ReserveReply::UserRequired,
            "5" => ReserveReply::QtyTooLarge {
                max: num(field()?)?,
            },
            "6" => ReserveReply::IdempotencyKeyReused,
            other => return Err(ReplyError(format!("reserve code {other:?}"))),
        });
    }
    Ok(Some(ReserveBatch {
        journal: (!journal.is_empty()).then_some(journal),
        replies,
    }))
}

// ---------------------------------------------------------------------------------------
// pay, fail

/// Builds a `pay.lua` or `fail.lua` call.
pub fn transition_call(
    script: ScriptId,
    keys: &Keys,
    pid: ProductId,
    reference: &str,
) -> ScriptCall {
    debug_assert!(matches!(script, ScriptId::Pay | ScriptId::Fail));
    let pk = keys.product_keys(pid);
    let mut c = ScriptCall::new(script);
    c.key(&pk.stock)
        .key(&keys.order(pid, reference))
        .key(&pk.pending)
        .key(&pk.journal)
        .key(&pk.users)
        .arg(reference);
    c
}

/// What a transition script found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionReply {
    NotLoaded,
    NotFound,
    Done {
        /// 0: this call made the transition asked for; 1: it had been made before (a repeat);
        /// 2: the order is in another final state.
        code: u8,
        /// This call changed the order (which the writer must then learn).
        changed: bool,
        record: OrderRecord,
    },
}

/// Decodes a transition reply for the order `reference` of product `pid`.
pub fn decode_transition(
    v: RespValue,
    pid: ProductId,
    reference: &str,
) -> Result<TransitionReply, ReplyError> {
    let items = array(v, "transition reply")?;
    let mut f = items.into_iter();
    let code = as_int(
        &f.next()
            .ok_or_else(|| ReplyError("empty transition reply".into()))?,
    )?;
    match code {
        NOT_LOADED => return Ok(TransitionReply::NotLoaded),
        NOT_FOUND => return Ok(TransitionReply::NotFound),
        0..=2 => {}
        other => return Err(ReplyError(format!("transition code {other}"))),
    }
    let changed = as_int(
        &f.next()
            .ok_or_else(|| ReplyError("short transition reply".into()))?,
    )? == 1;
    Ok(TransitionReply::Done {
        code: code as u8,
        changed,
        record: record_fields(&mut f, pid, reference.to_string())?,
    })
}

/// The six record fields the scripts reply with (`state, user, qty, amount, expires,
/// created`), as the record of `reference`.
fn record_fields(
    f: &mut impl Iterator<Item = RespValue>,
    pid: ProductId,
    reference: String,
) -> Result<OrderRecord, ReplyError> {
    let mut next = || {
        f.next()
            .ok_or_else(|| ReplyError("short record in a reply".into()))
    };
    let state_code = as_string(next()?)?;
    let state = OrderState::from_code(&state_code)
        .ok_or_else(|| ReplyError(format!("state {state_code:?}")))?;
    let user = as_string(next()?)?;
    let qty = as_int(&next()?)?;
    let amount_cents = as_int(&next()?)?;
    let expires_at_ms = as_int(&next()?)?;
    let created_at_ms = as_int(&next()?)?;
    Ok(OrderRecord {
        reference,
        product_id: pid,
        user_id: (!user.is_empty()).then_some(user),
        qty: i32::try_from(qty).map_err(|_| ReplyError(format!("qty {qty}")))?,
        amount_cents,
        state,
        expires_at_ms,
        created_at_ms,
    })
}

// ---------------------------------------------------------------------------------------
// expire

/// The separator of the references in a pending-set member (see `lua/lib.lua`): NUL, which
/// no reference can contain because PostgreSQL text cannot.
pub const MEMBER_SEPARATOR: char = '\0';

/// The number of orders a pending-set member names.
pub fn member_orders(member: &str) -> usize {
    member.split(MEMBER_SEPARATOR).count()
}

/// Builds an `expire.lua` call for one pending-set member.
pub fn expire_call(keys: &Keys, pid: ProductId, member: &str) -> ScriptCall {
    let pk = keys.product_keys(pid);
    let mut c = ScriptCall::new(ScriptId::Expire);
    c.key(&pk.stock)
        .key(&pk.pending)
        .key(&pk.journal)
        .key(&pk.users)
        .arg(member)
        .arg(keys.order_prefix(pid));
    c
}

/// What `expire.lua` did with a pending-set member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpireReply {
    NotLoaded,
    Done {
        /// The orders this call expired (now cancelled, their units back in the stock).
        expired: Vec<OrderRecord>,
        /// Orders of the member still pending but not due by Redis's clock: try again then.
        retry_at_ms: Option<i64>,
    },
}

pub fn decode_expire(v: RespValue, pid: ProductId) -> Result<ExpireReply, ReplyError> {
    let items = array(v, "expire reply")?;
    let mut f = items.into_iter();
    let head = as_int(
        &f.next()
            .ok_or_else(|| ReplyError("empty expire reply".into()))?,
    )?;
    if head == NOT_LOADED && f.len() == 0 {
        return Ok(ExpireReply::NotLoaded);
    }
    let mut expired = Vec::new();
    while let Some(reference) = f.next() {
        let reference = as_string(reference)?;
        expired.push(record_fields(&mut f, pid, reference)?);
    }
    Ok(ExpireReply::Done {
        expired,
        retry_at_ms: (head > 0).then_some(head),
    })
}

// ---------------------------------------------------------------------------------------
// order records read directly (GET /api/orders, journal replay)

/// `GET <order key>`: the record as `lua/lib.lua` packs it.
pub fn record_cmd(order_key: &str) -> Vec<u8> {
    crate::redis::cmd::command(&["GET", order_key])
}

/// Decodes a record packed as `st|qty|amt|exp|ct|uc|user` (see `lua/lib.lua`); `None` when
/// the record does not exist.
pub fn decode_record(
    v: RespValue,
    pid: ProductId,
    reference: &str,
) -> Result<Option<OrderRecord>, ReplyError> {
    let text = match v {
        RespValue::Nil => return Ok(None),
        v => as_string(v)?,
    };
    let mut f = text.splitn(7, '|');
    let mut next = || {
        f.next()
            .ok_or_else(|| ReplyError(format!("short record {text:?}")))
    };
    let st = next()?;
    let state = OrderState::from_code(st).ok_or_else(|| ReplyError(format!("state {st:?}")))?;
    let num = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| ReplyError(format!("number {s:?} in record")))
    };
    let qty = num(next()?)?;
    let amount_cents = num(next()?)?;
    let expires_at_ms = num(next()?)?;
    let created_at_ms = num(next()?)?;
    let _counted = next()?;
    let user = next()?;
    Ok(Some(OrderRecord {
        reference: reference.to_string(),
        product_id: pid,
        user_id: (!user.is_empty()).then(|| user.to_string()),
        qty: i32::try_from(qty).map_err(|_| ReplyError(format!("qty {qty}")))?,
        amount_cents,
        state,
        expires_at_ms,
        created_at_ms,
    }))
}

// ---------------------------------------------------------------------------------------
// SCAN

/// `SCAN <cursor> MATCH <pattern> COUNT 1000`.
pub fn scan_cmd(cursor: &str, pattern: &str) -> Vec<u8> {
    crate::redis::cmd::command(&["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"])
}

/// Splits a SCAN reply into the next cursor (`None` when the scan is complete) and the keys.
pub fn decode_scan(v: RespValue) -> Result<(Option<String>, Vec<Vec<u8>>), ReplyError> {
    let mut parts = array(v, "SCAN reply")?.into_iter();
    let (Some(cursor), Some(keys), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ReplyError("SCAN reply of the wrong length".into()));
    };
    let cursor = as_string(cursor)?;
    let keys = array(keys, "SCAN keys")?
        .into_iter()
        .map(|k| match k {
            RespValue::BulkString(b) => Ok(b),
            other => Err(bad("SCAN key", &other)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(((cursor != "0").then_some(cursor), keys))
}

// ---------------------------------------------------------------------------------------
// product

/// A product as Redis holds it, with its live reservable stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductView {
    pub id: ProductId,
    pub stock: i64,
    pub name: String,
    pub price_cents: i64,
    pub max_per_order: i64,
    pub per_user_limit: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn product_call(keys: &Keys, pid: ProductId) -> ScriptCall {
    let pk = keys.product_keys(pid);
    let mut c = ScriptCall::new(ScriptId::Product);
    c.key(&pk.stock).key(&pk.product);
    c
}

/// Decodes `product.lua`; `None` when the product is not loaded.
pub fn decode_product(v: RespValue, pid: ProductId) -> Result<Option<ProductView>, ReplyError> {
    if let RespValue::Integer(NOT_LOADED) = v {
        return Ok(None);
    }
    let items = array(v, "product")?;
    if items.len() != 7 {
        return Err(ReplyError("product: wrong field count".into()));
    }
    let mut f = items.into_iter();
    let mut next = || f.next().ok_or_else(|| ReplyError("short product".into()));
    let stock = as_int(&next()?)?;
    let name = as_string(next()?)?;
    let price_cents = as_int(&next()?)?;
    let max_per_order = as_int(&next()?)?;
    let limit = as_string(next()?)?;
    Ok(Some(ProductView {
        id: pid,
        stock,
        name,
        price_cents,
        max_per_order,
        per_user_limit: if limit.is_empty() {
            None
        } else {
            Some(
                limit
                    .parse()
                    .map_err(|_| ReplyError(format!("limit {limit:?}")))?,
            )
        },
        created_at: as_string(next()?)?,
        updated_at: as_string(next()?)?,
    }))
}

// ---------------------------------------------------------------------------------------
// load and adopt

/// What the writer read from PostgreSQL to install a product into Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSnapshot {
    pub id: ProductId,
    pub name: String,
    pub price_cents: i64,
    /// `products.stock`: units not yet sold.
    pub pg_stock: i64,
    pub max_per_order: i32,
    pub per_user_limit: Option<i32>,
    pub created_at: String,
    pub updated_at: String,
    /// Orders still pending: their units are not reservable, and Redis needs their records.
    pub pending: Vec<OrderRecord>,
    /// Units pending or paid per user (limited products only).
    pub user_units: Vec<(String, i64)>,
}

impl ProductSnapshot {
    /// Reservable stock: PostgreSQL stock minus the units of pending orders, never below zero.
    pub fn reservable(&self) -> i64 {
        let held: i64 = self.pending.iter().map(|o| i64::from(o.qty)).sum();
        (self.pg_stock - held).max(0)
    }
}

pub fn load_call(keys: &Keys, s: &ProductSnapshot) -> ScriptCall {
    let pk = keys.product_keys(s.id);
    let mut c = ScriptCall::new(ScriptId::Load);
    c.key(&pk.stock)
        .key(&pk.product)
        .key(&pk.pending)
        .key(&pk.users);
    for o in &s.pending {
        c.key(&keys.order(s.id, &o.reference));
    }
    c.arg(&s.name)
        .int(s.price_cents)
        .int(i64::from(s.max_per_order))
        .arg(s.per_user_limit.map(|l| l.to_string()).unwrap_or_default())
        .arg(&s.created_at)
        .arg(&s.updated_at)
        .int(s.reservable())
        .arg(keys.order_prefix(s.id))
        .int(s.pending.len() as i64);
    for o in &s.pending {
        c.arg(&o.reference)
            .arg(o.user_id.as_deref().unwrap_or(""))
            .int(i64::from(o.qty))
            .int(o.amount_cents)
            .int(o.expires_at_ms)
            .int(o.created_at_ms);
    }
    c.int(s.user_units.len() as i64);
    for (u, n) in &s.user_units {
        c.arg(u).int(*n);
    }
    c
}

/// The stock `load.lua` installed, or `None` when the product was live already.
pub fn decode_load(v: RespValue) -> Result<Option<i64>, ReplyError> {
    let items = array(v, "load reply")?;
    match items.as_slice() {
        [code] if as_int(code)? == 0 => Ok(None),
        [code, stock] if as_int(code)? == 1 => Ok(Some(as_int(stock)?)),
        _ => Err(ReplyError("load reply of the wrong shape".into())),
    }
}

/// Builds an `invalidate.lua` call (after a Redis restart).
pub fn invalidate_call(keys: &Keys, pid: ProductId) -> ScriptCall {
    let pk = keys.product_keys(pid);
    let mut c = ScriptCall::new(ScriptId::Invalidate);
    c.key(&pk.stock)
        .key(&pk.pending)
        .key(&pk.journal)
        .key(&pk.users)
        .arg(keys.order_prefix(pid));
    c
}

pub fn adopt_call(keys: &Keys, o: &OrderRecord) -> ScriptCall {
    let pk = keys.product_keys(o.product_id);
    let mut c = ScriptCall::new(ScriptId::Adopt);
    c.key(&pk.stock)
        .key(&pk.product)
        .key(&keys.order(o.product_id, &o.reference))
        .key(&pk.pending)
        .key(&pk.users)
        .arg(&o.reference)
        .arg(o.user_id.as_deref().unwrap_or(""))
        .int(i64::from(o.qty))
        .int(o.amount_cents)
        .int(o.expires_at_ms)
        .int(o.created_at_ms);
    c
}

/// What `adopt.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptReply {
    NotLoaded,
    AlreadyThere,
    /// Adopted; `shortfall` units could not be taken from an exhausted stock.
    Adopted {
        shortfall: i64,
    },
}

pub fn decode_adopt(v: RespValue) -> Result<AdoptReply, ReplyError> {
    let items = array(v, "adopt reply")?;
    let code = as_int(
        items
            .first()
            .ok_or_else(|| ReplyError("empty adopt reply".into()))?,
    )?;
    match code {
        NOT_LOADED => Ok(AdoptReply::NotLoaded),
        1 => Ok(AdoptReply::AlreadyThere),
        0 => Ok(AdoptReply::Adopted {
            shortfall: as_int(
                items
                    .get(1)
                    .ok_or_else(|| ReplyError("adopt without shortfall".into()))?,
            )?,
        }),
        other => Err(ReplyError(format!("adopt code {other}"))),
    }
}

// ---------------------------------------------------------------------------------------
// journal

/// The journal member of one change to a final state: `<reference>|<state code>` (see
/// `journal` in lib.lua). Reservations are journaled per call of `reserve.lua` instead, as
/// `<ref>,<ref>,...|pending`.
pub fn journal_member(reference: &str, state: OrderState) -> String {
    format!("{reference}|{}", state.code())
}

/// The references a journal member covers and the state it records. A reference made by
/// another tool may contain `|` or `,`, but those only ever appear in single-reference
/// members of a final state; the state code never contains either.
pub fn parse_journal_member(member: &str) -> Option<(Vec<&str>, OrderState)> {
    let (refs, code) = member.rsplit_once('|')?;
    let state = OrderState::from_code(code)?;
    let refs = if state == OrderState::Pending {
        refs.split(',').filter(|r| !r.is_empty()).collect()
    } else {
        vec![refs]
    };
    (!refs.is_empty()).then_some((refs, state))
}

/// The commands that acknowledge what was committed for one product: remove the journal
/// `members` it covers, and put an expiry on the records of orders now `final` so Redis does
/// not grow with the order history.
pub fn ack_commands(
    keys: &Keys,
    pid: ProductId,
    members: &[String],
    finals: &[&str],
    ttl_secs: u64,
) -> Vec<Vec<u8>> {
    let mut cmds = Vec::with_capacity(1 + finals.len());
    if !members.is_empty() {
        let mut zrem = crate::redis::cmd::Cmd::new(2 + members.len());
        zrem.arg("ZREM").arg(&keys.product_keys(pid).journal);
        for m in members {
            zrem.arg(m);
        }
        cmds.push(zrem.finish());
    }
    let ttl = ttl_secs.to_string();
    for r in finals {
        cmds.push(crate::redis::cmd::command(&[
            "EXPIRE",
            &keys.order(pid, r),
            &ttl,
        ]));
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CancelReason;

    fn bulk(s: &str) -> RespValue {
        RespValue::BulkString(s.as_bytes().to_vec())
    }
    fn int(i: i64) -> RespValue {
        RespValue::Integer(i)
    }
    fn pid() -> ProductId {
        ProductId::new(3).unwrap()
    }

    #[test]
    fn scripts_have_stable_shas_and_include_the_library() {
        for s in ScriptId::ALL {
            assert_eq!(s.sha().len(), 40, "{}", s.name());
        }
        assert!(ScriptId::Pay.body().contains("local function cancel"));
        assert!(!ScriptId::Product.body().contains("local function cancel"));
    }

    #[test]
    fn evalsha_and_eval_carry_the_same_keys_and_arguments() {
        let mut c = ScriptCall::new(ScriptId::Product);
        c.key("k").arg("a").int(5);
        let sha = String::from_utf8(c.encode(false)).unwrap();
        assert!(sha.starts_with("*6\r\n$7\r\nEVALSHA\r\n$40\r\n"));
        assert!(sha.ends_with("$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\n5\r\n"));
        let eval = String::from_utf8(c.encode(true)).unwrap();
        assert!(eval.starts_with("*6\r\n$4\r\nEVAL\r\n"));
        assert!(eval.ends_with("$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\n5\r\n"));
        assert!(is_noscript("NOSCRIPT No matching script. Please use EVAL."));
    }

    #[test]
    fn reserve_replies_decode_every_code() {
        let v = RespValue::Array(vec![
            bulk("1700000000000"),
            bulk("1690000000000"),
            bulk("3-A|pending"),
            bulk("0|4000"),
            bulk("1|3-B|2|4000|5|6"),
            bulk("2"),
            bulk("3"),
            bulk("4"),
            bulk("5|10"),
            bulk("6"),
        ]);
        let b = decode_reserve(v, 7).unwrap().unwrap();
        assert_eq!(b.journal.as_deref(), Some("3-A|pending"));
        let r = b.replies;
        assert_eq!(
            r[0],
            ReserveReply::Reserved {
                amount_cents: 4000,
                expires_at_ms: 1_700_000_000_000,
                created_at_ms: 1_690_000_000_000
            }
        );
        assert_eq!(
            r[1],
            ReserveReply::Replayed {
                reference: "3-B".into(),
                qty: 2,
                amount_cents: 4000,
                expires_at_ms: 5,
                created_at_ms: 6
            }
        );
        assert_eq!(
            r[2..],
            [
                ReserveReply::InsufficientStock,
                ReserveReply::LimitReached,
                ReserveReply::UserRequired,
                ReserveReply::QtyTooLarge { max: 10 },
                ReserveReply::IdempotencyKeyReused
            ]
        );
        assert_eq!(decode_reserve(int(7), 1).unwrap(), None);
        let none = RespValue::Array(vec![bulk("1"), bulk("2"), bulk(""), bulk("2")]);
        assert_eq!(decode_reserve(none, 1).unwrap().unwrap().journal, None);
    }

    #[test]
    fn malformed_reserve_replies_are_errors_not_panics() {
        let head = || vec![bulk("1"), bulk("2"), bulk("")];
        assert!(decode_reserve(int(3), 1).is_err());
        assert!(decode_reserve(RespValue::Array(vec![]), 1).is_err());
        for bad in ["0", "0|x", "42", "", "1|r|2", "5"] {
            let mut v = head();
            v.push(bulk(bad));
            assert!(decode_reserve(RespValue::Array(v), 1).is_err(), "{bad:?}");
        }
        let mut v = head();
        v.push(int(0));
        assert!(decode_reserve(RespValue::Array(v), 1).is_err());
    }

    #[test]
    fn transition_replies_decode() {
        let v = RespValue::Array(vec![
            int(0),
            int(1),
            bulk("payment_failed"),
            bulk("alice"),
            bulk("2"),
            bulk("400"),
            bulk("99"),
            bulk("11"),
        ]);
        match decode_transition(v, pid(), "3-X").unwrap() {
            TransitionReply::Done {
                code,
                changed,
                record,
            } => {
                assert_eq!((code, changed), (0, true));
                assert_eq!(
                    record.state,
                    OrderState::Cancelled(CancelReason::PaymentFailed)
                );
                assert_eq!(record.user_id.as_deref(), Some("alice"));
                assert_eq!(
                    (
                        record.qty,
                        record.amount_cents,
                        record.expires_at_ms,
                        record.created_at_ms
                    ),
                    (2, 400, 99, 11)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode_transition(RespValue::Array(vec![int(7)]), pid(), "r").unwrap(),
            TransitionReply::NotLoaded
        );
        assert_eq!(
            decode_transition(RespValue::Array(vec![int(8)]), pid(), "r").unwrap(),
            TransitionReply::NotFound
        );
        let bad_state = RespValue::Array(vec![
            int(0),
            int(1),
            bulk("weird"),
            bulk(""),
            bulk("1"),
            bulk("1"),
            bulk("1"),
            bulk("1"),
        ]);
        assert!(decode_transition(bad_state, pid(), "r").is_err());
    }

    #[test]
    fn expire_replies_decode() {
        let v = RespValue::Array(vec![
            int(0),
            bulk("3-A"),
            bulk("expired"),
            bulk(""),
            bulk("1"),
            bulk("100"),
            bulk("50"),
            bulk("10"),
            bulk("3-B"),
            bulk("expired"),
            bulk("bob"),
            bulk("2"),
            bulk("200"),
            bulk("50"),
            bulk("10"),
        ]);
        let ExpireReply::Done {
            expired,
            retry_at_ms,
        } = decode_expire(v, pid()).unwrap()
        else {
            panic!("not done");
        };
        assert_eq!(retry_at_ms, None);
        assert_eq!(
            expired
                .iter()
                .map(|r| (r.reference.as_str(), r.user_id.as_deref(), r.qty))
                .collect::<Vec<_>>(),
            vec![("3-A", None, 1), ("3-B", Some("bob"), 2)]
        );
        assert!(
            expired
                .iter()
                .all(|r| r.state == OrderState::Cancelled(CancelReason::Expired))
        );
        assert_eq!(
            decode_expire(RespValue::Array(vec![bulk("1700000000000")]), pid()).unwrap(),
            ExpireReply::Done {
                expired: vec![],
                retry_at_ms: Some(1_700_000_000_000)
            }
        );
        assert_eq!(
            decode_expire(RespValue::Array(vec![int(7)]), pid()).unwrap(),
            ExpireReply::NotLoaded
        );
        // A record cut short is an error, not a panic.
        let short = RespValue::Array(vec![int(0), bulk("3-A"), bulk("expired")]);
        assert!(decode_expire(short, pid()).is_err());
    }

    #[test]
    fn pending_members_name_their_orders() {
        assert_eq!(member_orders("1-A\u{0}1-B\u{0}1-C"), 3);
        assert_eq!(member_orders("1-A"), 1);
        // A reference restored from PostgreSQL may hold anything but NUL, commas included.
        assert_eq!(member_orders("a,b|c"), 1);
    }

    #[test]
    fn records_and_products_decode() {
        let r = decode_record(bulk("paid|1|100|7|3|0|"), pid(), "3-R")
            .unwrap()
            .unwrap();
        assert_eq!(r.user_id, None);
        assert_eq!(r.state, OrderState::Paid);
        assert_eq!(
            (r.qty, r.amount_cents, r.expires_at_ms, r.created_at_ms),
            (1, 100, 7, 3)
        );
        let r = decode_record(bulk("pending|2|5|7|3|1|a|b"), pid(), "3-R")
            .unwrap()
            .unwrap();
        assert_eq!(
            r.user_id.as_deref(),
            Some("a|b"),
            "the user is the rest, '|' included"
        );
        assert_eq!(decode_record(RespValue::Nil, pid(), "3-R").unwrap(), None);
        assert!(decode_record(bulk("pending|2|5"), pid(), "3-R").is_err());
        assert!(decode_record(bulk("weird|1|1|1|1|0|"), pid(), "3-R").is_err());

        let p = RespValue::Array(vec![
            bulk("5"),
            bulk("Item"),
            bulk("100"),
            bulk("10"),
            bulk(""),
            bulk("2026-01-01T00:00:00Z"),
            bulk("2026-01-01T00:00:00Z"),
        ]);
        let p = decode_product(p, pid()).unwrap().unwrap();
        assert_eq!(
            (p.stock, p.price_cents, p.max_per_order, p.per_user_limit),
            (5, 100, 10, None)
        );
        assert_eq!(decode_product(int(7), pid()).unwrap(), None);
    }

    #[test]
    fn journal_members_name_the_state() {
        assert_eq!(journal_member("3-A", OrderState::Paid), "3-A|paid");
        assert_eq!(
            parse_journal_member("x|y,z|expired"),
            Some((vec!["x|y,z"], OrderState::Cancelled(CancelReason::Expired)))
        );
        assert_eq!(
            parse_journal_member("3-A,3-B|pending"),
            Some((vec!["3-A", "3-B"], OrderState::Pending))
        );
        assert_eq!(parse_journal_member("nobar"), None);
        assert_eq!(parse_journal_member("|pending"), None);
        let members = vec!["3-A,3-C|pending".to_string(), "3-B|paid".to_string()];
        let cmds = ack_commands(&Keys::new("fs"), pid(), &members, &["3-B"], 60);
        assert_eq!(cmds.len(), 2);
        let zrem = String::from_utf8(cmds[0].clone()).unwrap();
        assert!(
            zrem.starts_with("*4\r\n$4\r\nZREM\r\n$16\r\nfs:{p:3}:journal\r\n"),
            "{zrem}"
        );
        assert!(zrem.contains("3-A,3-C|pending") && zrem.contains("3-B|paid"));
        assert_eq!(
            String::from_utf8(cmds[1].clone()).unwrap(),
            "*3\r\n$6\r\nEXPIRE\r\n$18\r\nfs:{p:3}:order:3-B\r\n$2\r\n60\r\n"
        );
        assert!(ack_commands(&Keys::new("fs"), pid(), &[], &[], 60).is_empty());
    }

    #[test]
    fn scan_replies_decode() {
        let v = RespValue::Array(vec![
            bulk("17"),
            RespValue::Array(vec![bulk("a"), bulk("b")]),
        ]);
        assert_eq!(
            decode_scan(v).unwrap(),
            (Some("17".into()), vec![b"a".to_vec(), b"b".to_vec()])
        );
        let done = RespValue::Array(vec![bulk("0"), RespValue::Array(vec![])]);
        assert_eq!(decode_scan(done).unwrap(), (None, vec![]));
        assert!(decode_scan(RespValue::Array(vec![bulk("0")])).is_err());
        assert!(decode_scan(int(3)).is_err());
    }

    #[test]
    fn reservable_stock_subtracts_pending_units() {
        let o = |qty| OrderRecord {
            reference: "r".into(),
            product_id: pid(),
            user_id: None,
            qty,
            amount_cents: 0,
            state: OrderState::Pending,
            expires_at_ms: 0,
            created_at_ms: 0,
        };
        let mut s = ProductSnapshot {
            id: pid(),
            name: "x".into(),
            price_cents: 1,
            pg_stock: 10,
            max_per_order: 10,
            per_user_limit: None,
            created_at: String::new(),
            updated_at: String::new(),
            pending: vec![o(3), o(4)],
            user_units: vec![],
        };
        assert_eq!(s.reservable(), 3);
        s.pending.push(o(9));
        assert_eq!(s.reservable(), 0);
    }
}
