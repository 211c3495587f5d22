//! `lua/expire.lua`: the reaper cancels the due reservations of one pending-set member, and
//! the pending-set member format they share with `reserve.lua`.

use crate::domain::{OrderRecord, ProductId};
use crate::redis::keys::Keys;
use crate::redis::record::record_fields;
use crate::redis::reply::{ReplyError, array, as_int, as_string};
use crate::redis::scripts::{NOT_LOADED, ScriptCall, ScriptId};
use redis_async::resp::RespValue;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CancelReason, OrderState};
    use crate::redis::reply::fake::{bulk, int};
    fn pid() -> ProductId {
        ProductId::new(3).unwrap()
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
}
