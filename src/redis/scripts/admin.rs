//! `lua/restock.lua` (a journaled change of reservable stock), `lua/close.lua` (the end of a
//! sale by Redis's clock) and `lua/sync.lua` (a product's
//! sold attributes copied from PostgreSQL): what the admin API and the attribute sync change.

use crate::domain::{MAX_STOCK, ProductAttrs, ProductId};
use crate::redis::keys::Keys;
use crate::redis::reply::{ReplyError, array, as_int, as_string};
use crate::redis::scripts::load::opt_ms;
use crate::redis::scripts::{NOT_LOADED, ScriptCall, ScriptId};
use redis_async::resp::RespValue;

pub fn restock_call(keys: &Keys, pid: ProductId, op_id: &str, delta: i64) -> ScriptCall {
    let pk = keys.product_keys(pid);
    let mut c = ScriptCall::new(ScriptId::Restock);
    c.key(&pk.stock)
        .key(&pk.journal)
        .arg(op_id)
        .int(delta)
        .int(MAX_STOCK);
    c
}

/// What `restock.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestockReply {
    NotLoaded,
    /// Fewer reservable units than the negative delta asked for; nothing changed.
    Insufficient {
        reservable: i64,
    },
    /// The reservable stock would pass [`MAX_STOCK`]; nothing changed.
    OverCap {
        reservable: i64,
    },
    /// Applied; the reservable stock after it.
    Done {
        reservable: i64,
    },
}

pub fn decode_restock(v: RespValue) -> Result<RestockReply, ReplyError> {
    let items = array(v, "restock reply")?;
    let code = as_int(
        items
            .first()
            .ok_or_else(|| ReplyError("empty restock reply".into()))?,
    )?;
    let stock = || {
        items
            .get(1)
            .ok_or_else(|| ReplyError("restock reply without stock".into()))
            .and_then(as_int)
    };
    match code {
        NOT_LOADED => Ok(RestockReply::NotLoaded),
        2 => Ok(RestockReply::Insufficient {
            reservable: stock()?,
        }),
        3 => Ok(RestockReply::OverCap {
            reservable: stock()?,
        }),
        0 => Ok(RestockReply::Done {
            reservable: stock()?,
        }),
        other => Err(ReplyError(format!("restock code {other}"))),
    }
}

pub fn close_call(keys: &Keys, pid: ProductId) -> ScriptCall {
    let pk = keys.product_keys(pid);
    let mut c = ScriptCall::new(ScriptId::Close);
    c.key(&pk.stock).key(&pk.product);
    c
}

/// What `close.lua` did: the end of the sale by Redis's clock (Unix ms), set now or earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReply {
    NotLoaded,
    Closed { ends_ms: i64 },
    AlreadyEnded { ends_ms: i64 },
}

pub fn decode_close(v: RespValue) -> Result<CloseReply, ReplyError> {
    let items = array(v, "close reply")?;
    let code = as_int(
        items
            .first()
            .ok_or_else(|| ReplyError("empty close reply".into()))?,
    )?;
    let ends = || {
        items
            .get(1)
            .ok_or_else(|| ReplyError("close reply without a time".into()))
            .and_then(as_int)
    };
    match code {
        NOT_LOADED => Ok(CloseReply::NotLoaded),
        0 => Ok(CloseReply::Closed { ends_ms: ends()? }),
        1 => Ok(CloseReply::AlreadyEnded { ends_ms: ends()? }),
        other => Err(ReplyError(format!("close code {other}"))),
    }
}

pub fn sync_call(keys: &Keys, a: &ProductAttrs) -> ScriptCall {
    let pk = keys.product_keys(a.id);
    let mut c = ScriptCall::new(ScriptId::Sync);
    c.key(&pk.stock)
        .key(&pk.product)
        .int(a.rev)
        .arg(&a.name)
        .int(a.price_cents)
        .int(i64::from(a.max_per_order))
        .arg(a.per_user_limit.map(|l| l.to_string()).unwrap_or_default())
        .arg(opt_ms(a.sale_starts_at_ms))
        .arg(opt_ms(a.sale_ends_at_ms))
        .arg(&a.updated_at);
    c
}

/// What `sync.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncReply {
    /// Not loaded, or already this revision.
    Unchanged,
    Copied,
    /// The per-user limit was switched on or off: invalidate the product.
    Invalidate,
}

pub fn decode_sync(v: RespValue) -> Result<SyncReply, ReplyError> {
    match as_int(&v)? {
        0 => Ok(SyncReply::Unchanged),
        1 => Ok(SyncReply::Copied),
        2 => Ok(SyncReply::Invalidate),
        other => Err(ReplyError(format!("sync code {other}"))),
    }
}

pub fn audit_call(keys: &Keys, pid: ProductId) -> ScriptCall {
    let pk = keys.product_keys(pid);
    let mut c = ScriptCall::new(ScriptId::Audit);
    c.key(&pk.stock)
        .key(&pk.journal)
        .arg(keys.order_prefix(pid));
    c
}

/// One product's state in Redis as `audit.lua` read it in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Reservable stock; `None` when the product is not loaded.
    pub stock: Option<i64>,
    /// The journal members, as written.
    pub members: Vec<String>,
    /// The quantity of each order the journal names (`None`: its record is gone).
    pub qty: std::collections::HashMap<String, Option<i64>>,
}

pub fn decode_audit(v: RespValue) -> Result<Audit, ReplyError> {
    let mut parts = array(v, "audit reply")?.into_iter();
    let (Some(stock), Some(members), Some(qtys), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReplyError("audit reply of the wrong length".into()));
    };
    let stock = as_string(stock)?;
    let members = array(members, "audit members")?
        .into_iter()
        .map(as_string)
        .collect::<Result<Vec<_>, _>>()?;
    let mut qty = std::collections::HashMap::new();
    let mut it = array(qtys, "audit quantities")?.into_iter();
    while let (Some(r), Some(q)) = (it.next(), it.next()) {
        let q = as_string(q)?;
        qty.insert(
            as_string(r)?,
            if q.is_empty() {
                None
            } else {
                Some(q.parse().map_err(|_| ReplyError(format!("qty {q:?}")))?)
            },
        );
    }
    Ok(Audit {
        stock: if stock.is_empty() {
            None
        } else {
            Some(
                stock
                    .parse()
                    .map_err(|_| ReplyError(format!("stock {stock:?}")))?,
            )
        },
        members,
        qty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::reply::fake::int;

    #[test]
    fn replies_decode() {
        let a = |v: Vec<i64>| RespValue::Array(v.into_iter().map(int).collect());
        assert_eq!(decode_restock(a(vec![7])).unwrap(), RestockReply::NotLoaded);
        assert_eq!(
            decode_restock(a(vec![2, 3])).unwrap(),
            RestockReply::Insufficient { reservable: 3 }
        );
        assert_eq!(
            decode_restock(a(vec![3, 5])).unwrap(),
            RestockReply::OverCap { reservable: 5 }
        );
        assert_eq!(
            decode_restock(a(vec![0, 9])).unwrap(),
            RestockReply::Done { reservable: 9 }
        );
        assert!(decode_restock(a(vec![0])).is_err());
        assert!(decode_restock(a(vec![5, 1])).is_err());
        assert_eq!(decode_sync(int(2)).unwrap(), SyncReply::Invalidate);
        assert!(decode_sync(int(3)).is_err());
    }
}
