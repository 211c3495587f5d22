//! The order record as `lua/lib.lua` packs it (`st|qty|amt|exp|ct|uc|user`), read directly
//! with GET (`GET /api/orders`, journal replay), and the six record fields the scripts put in
//! their replies.

use crate::domain::{OrderRecord, OrderState, ProductId};
use crate::redis::cmd::command;
use crate::redis::reply::{ReplyError, as_int, as_string};
use redis_async::resp::RespValue;

/// `GET <order key>`: the record as `lua/lib.lua` packs it.
pub fn record_cmd(order_key: &str) -> Vec<u8> {
    command(&["GET", order_key])
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

/// The six record fields the scripts reply with (`state, user, qty, amount, expires,
/// created`), as the record of `reference`.
pub fn record_fields(
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::redis::reply::fake::bulk;
    fn pid() -> ProductId {
        ProductId::new(3).unwrap()
    }

    #[test]
    fn records_decode() {
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
    }
}
