//! `lua/pay.lua`, `lua/fail.lua` and `lua/cancel.lua`: a payment provider's verdict, or its
//! buyer giving it back, moves a pending order to its final state, exactly once.

use crate::domain::{OrderRecord, ProductId};
use crate::redis::keys::Keys;
use crate::redis::record::record_fields;
use crate::redis::reply::{ReplyError, array, as_int};
use crate::redis::scripts::{NOT_FOUND, NOT_LOADED, ScriptCall, ScriptId};
use redis_async::resp::RespValue;

/// The provider's verdict: which script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// `pay.lua`: pending → paid.
    Success,
    /// `fail.lua`: pending → cancelled (`payment_failed`), units back.
    Failure,
}

/// Builds a `pay.lua` or `fail.lua` call.
pub fn transition_call(
    verdict: Settlement,
    keys: &Keys,
    pid: ProductId,
    reference: &str,
) -> ScriptCall {
    order_call(
        match verdict {
            Settlement::Success => ScriptId::Pay,
            Settlement::Failure => ScriptId::Fail,
        },
        keys,
        pid,
        reference,
    )
}

/// Builds a `cancel.lua` call: `buyer` is the one asking in `jwt` mode (another buyer's
/// order is then "not found"), `None` when whoever holds the reference may cancel.
pub fn cancel_call(
    keys: &Keys,
    pid: ProductId,
    reference: &str,
    buyer: Option<&str>,
) -> ScriptCall {
    let mut c = order_call(ScriptId::Cancel, keys, pid, reference);
    c.arg(buyer.unwrap_or(""));
    c
}

/// The keys every order transition touches, and the reference.
fn order_call(script: ScriptId, keys: &Keys, pid: ProductId, reference: &str) -> ScriptCall {
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

/// Where the order stood relative to the transition asked for (reply codes 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// This call made the transition asked for.
    Applied,
    /// The same transition had been made before: a repeat.
    Repeated,
    /// The order is in another final state (a payment after expiry, a failure after a
    /// payment), possibly reached by this very call expiring an order past its time.
    OtherFinal,
}

/// What a transition script found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionReply {
    NotLoaded,
    NotFound,
    Done {
        transition: Transition,
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
    let transition = match code {
        NOT_LOADED => return Ok(TransitionReply::NotLoaded),
        NOT_FOUND => return Ok(TransitionReply::NotFound),
        0 => Transition::Applied,
        1 => Transition::Repeated,
        2 => Transition::OtherFinal,
        other => return Err(ReplyError(format!("transition code {other}"))),
    };
    let changed = as_int(
        &f.next()
            .ok_or_else(|| ReplyError("short transition reply".into()))?,
    )? == 1;
    Ok(TransitionReply::Done {
        transition,
        changed,
        record: record_fields(&mut f, pid, reference.to_string())?,
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
                transition,
                changed,
                record,
            } => {
                assert_eq!((transition, changed), (Transition::Applied, true));
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
}
