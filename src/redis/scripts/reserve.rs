//! `lua/reserve.lua`: the call for a batch of reservations of one product, and its reply.

use crate::domain::{ProductId, ReserveOutcome};
use crate::redis::keys::{Keys, ProductKeys};
use crate::redis::reply::{ReplyError, array, as_int, as_string};
use crate::redis::scripts::{NOT_LOADED, ScriptCall, ScriptId};
use redis_async::resp::RespValue;

/// One reservation request inside a `reserve.lua` call.
#[derive(Debug, Clone)]
pub struct ReserveRequest<'a> {
    pub reference: &'a str,
    pub qty: i64,
    /// `""` when the client named no user.
    pub user: &'a str,
    /// The key remembering this request's Idempotency-Key (`Keys::idem`), if it has one.
    pub idem_key: Option<&'a str>,
}

/// Builds a `reserve.lua` call for the requests, all for product `pid`.
pub fn reserve_call(
    keys: &Keys,
    pk: &ProductKeys,
    pid: ProductId,
    hold_ms: i64,
    idem_ttl_secs: u64,
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
        match r.idem_key {
            Some(k) => c.key(k),
            None => c.key(&pk.stock),
        };
    }
    c.int(hold_ms)
        .int(idem_ttl_secs as i64)
        .int(reqs.len() as i64);
    for r in reqs {
        c.arg(r.reference)
            .int(r.qty)
            .arg(r.user)
            .arg(if r.idem_key.is_some() { "1" } else { "0" });
    }
    c
}

/// The reply to one reservation request of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveReply {
    /// Reserved under the reference the request carried.
    Reserved {
        amount_cents: i64,
        expires_at_ms: i64,
        created_at_ms: i64,
    },
    /// Nothing reserved by this request, and why (never `Reserved` or `ProductNotFound`).
    Not(ReserveOutcome),
}

/// What one `reserve.lua` call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveBatch {
    /// The journal member covering every reservation of the call (`None` if none).
    pub journal: Option<String>,
    /// One reply per request, in order.
    pub replies: Vec<ReserveReply>,
}

/// Decodes a `reserve.lua` reply for `n` requests of product `pid`; `None` means the product
/// is not loaded.
pub fn decode_reserve(
    v: RespValue,
    pid: ProductId,
    n: usize,
) -> Result<Option<ReserveBatch>, ReplyError> {
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
            "1" => {
                let replayed = ReserveOutcome::Replayed {
                    reference: field()?.to_string(),
                    product_id: pid,
                    qty: num(field()?)?,
                    amount_cents: num(field()?)?,
                    expires_at_ms: num(field()?)?,
                };
                // The creation time completes the shape; the 202 does not show it.
                num(field()?)?;
                ReserveReply::Not(replayed)
            }
            "2" => ReserveReply::Not(ReserveOutcome::InsufficientStock),
            "3" => ReserveReply::Not(ReserveOutcome::LimitReached),
            "4" => ReserveReply::Not(ReserveOutcome::UserRequired),
            "5" => ReserveReply::Not(ReserveOutcome::QtyTooLarge {
                max: num(field()?)?,
            }),
            "6" => ReserveReply::Not(ReserveOutcome::IdempotencyKeyReused),
            "7" => {
                let starts_at_ms = num(field()?)?;
                let now = num(field()?)?;
                let wait_ms = (starts_at_ms - now).max(0);
                ReserveReply::Not(ReserveOutcome::SaleNotStarted {
                    starts_at_ms,
                    retry_after_secs: u32::try_from((wait_ms + 999) / 1000)
                        .unwrap_or(u32::MAX)
                        .max(1),
                })
            }
            "8" => ReserveReply::Not(ReserveOutcome::SaleEnded),
            other => return Err(ReplyError(format!("reserve code {other:?}"))),
        });
    }
    Ok(Some(ReserveBatch {
        journal: (!journal.is_empty()).then_some(journal),
        replies,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::redis::reply::fake::{bulk, int};

    fn pid() -> ProductId {
        ProductId::new(3).unwrap()
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
        let b = decode_reserve(v, pid(), 7).unwrap().unwrap();
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
            ReserveReply::Not(ReserveOutcome::Replayed {
                reference: "3-B".into(),
                product_id: pid(),
                qty: 2,
                amount_cents: 4000,
                expires_at_ms: 5,
            })
        );
        assert_eq!(
            r[2..],
            [
                ReserveOutcome::InsufficientStock,
                ReserveOutcome::LimitReached,
                ReserveOutcome::UserRequired,
                ReserveOutcome::QtyTooLarge { max: 10 },
                ReserveOutcome::IdempotencyKeyReused
            ]
            .map(ReserveReply::Not)
        );
        assert_eq!(decode_reserve(int(7), pid(), 1).unwrap(), None);
        let none = RespValue::Array(vec![bulk("1"), bulk("2"), bulk(""), bulk("2")]);
        assert_eq!(
            decode_reserve(none, pid(), 1).unwrap().unwrap().journal,
            None
        );
    }

    #[test]
    fn malformed_reserve_replies_are_errors_not_panics() {
        let head = || vec![bulk("1"), bulk("2"), bulk("")];
        assert!(decode_reserve(int(3), pid(), 1).is_err());
        assert!(decode_reserve(RespValue::Array(vec![]), pid(), 1).is_err());
        for bad in ["0", "0|x", "42", "", "1|r|2", "5"] {
            let mut v = head();
            v.push(bulk(bad));
            assert!(
                decode_reserve(RespValue::Array(v), pid(), 1).is_err(),
                "{bad:?}"
            );
        }
        let mut v = head();
        v.push(int(0));
        assert!(decode_reserve(RespValue::Array(v), pid(), 1).is_err());
    }
}
