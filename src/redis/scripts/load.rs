//! The scripts that install and forget a product's state: `lua/load.lua` (a product from
//! PostgreSQL, only if absent), `lua/adopt.lua` (a pending order that only PostgreSQL has) and
//! `lua/invalidate.lua` (after Redis restarted from stale data).

use crate::domain::{OrderRecord, ProductId, ProductSnapshot};
use crate::redis::keys::Keys;
use crate::redis::reply::{ReplyError, array, as_int};
use crate::redis::scripts::{NOT_LOADED, ScriptCall, ScriptId};
use redis_async::resp::RespValue;

pub fn load_call(keys: &Keys, s: &ProductSnapshot) -> ScriptCall {
    let pk = keys.product_keys(s.id);
    let mut c = ScriptCall::new(ScriptId::Load);
    c.key(&pk.stock)
        .key(&pk.product)
        .key(&pk.pending)
        .key(&pk.users)
        .key(&pk.journal);
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
        .arg(opt_ms(s.sale_starts_at_ms))
        .arg(opt_ms(s.sale_ends_at_ms))
        .int(s.attrs_rev)
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
    c.int(s.applied_restocks.len() as i64);
    for op in &s.applied_restocks {
        c.arg(op);
    }
    c
}

/// An optional time as a script argument: Unix ms, or `""` for none.
pub fn opt_ms(t: Option<i64>) -> String {
    t.map(|v| v.to_string()).unwrap_or_default()
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
