//! The journal: changes Redis holds that PostgreSQL may not have yet, one sorted set per
//! product scored by time. Its member formats (written by `lua/lib.lua`, `lua/reserve.lua`
//! and `lua/restock.lua`), and the commands that acknowledge what the writer committed:
//! - `<ref>,<ref>,...|pending`: the reservations of one `reserve.lua` call;
//! - `<ref>|<state code>`: one order's change to a final state;
//! - `restock|<op id>|<delta>`: a restock (the op id is a ULID, the delta a non-zero integer).

use crate::domain::{OrderState, ProductId};
use crate::redis::cmd::{Cmd, command};
use crate::redis::keys::Keys;

/// The journal member of one change to a final state: `<reference>|<state code>` (see
/// `journal` in lib.lua). Reservations are journaled per call of `reserve.lua` instead, as
/// `<ref>,<ref>,...|pending`.
pub fn journal_member(reference: &str, state: OrderState) -> String {
    format!("{reference}|{}", state.code())
}

/// The journal member of a restock.
pub fn restock_member(op_id: &str, delta: i64) -> String {
    format!("restock|{op_id}|{delta}")
}

/// What a journal member records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalEntry<'a> {
    /// Orders in a state PostgreSQL may not have yet.
    Orders {
        references: Vec<&'a str>,
        state: OrderState,
    },
    /// A restock PostgreSQL may not have applied yet.
    Restock { op_id: &'a str, delta: i64 },
}

/// Reads a journal member; `None` for one that is not ours. A reference made by another tool
/// may contain `|` or `,`, but those only ever appear in single-reference members of a final
/// state, whose state code never contains either; a restock's op id is a ULID and its last
/// field a number, which no state code is.
pub fn parse_journal_member(member: &str) -> Option<JournalEntry<'_>> {
    if let Some((op_id, delta)) = member
        .strip_prefix("restock|")
        .and_then(|rest| rest.split_once('|'))
        && op_id.len() == ulid::ULID_LEN
        && let Ok(delta) = delta.parse::<i64>()
    {
        return Some(JournalEntry::Restock { op_id, delta });
    }
    let (refs, code) = member.rsplit_once('|')?;
    let state = OrderState::from_code(code)?;
    let references: Vec<&str> = if state == OrderState::Pending {
        refs.split(',').filter(|r| !r.is_empty()).collect()
    } else {
        vec![refs]
    };
    (!references.is_empty()).then_some(JournalEntry::Orders { references, state })
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
        let mut zrem = Cmd::new(2 + members.len());
        zrem.arg("ZREM").arg(&keys.product_keys(pid).journal);
        for m in members {
            zrem.arg(m);
        }
        cmds.push(zrem.finish());
    }
    let ttl = ttl_secs.to_string();
    for r in finals {
        cmds.push(command(&["EXPIRE", &keys.order(pid, r), &ttl]));
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CancelReason;

    fn pid() -> ProductId {
        ProductId::new(3).unwrap()
    }

    #[test]
    fn journal_members_name_the_state() {
        assert_eq!(journal_member("3-A", OrderState::Paid), "3-A|paid");
        let orders = |references, state| Some(JournalEntry::Orders { references, state });
        assert_eq!(
            parse_journal_member("x|y,z|expired"),
            orders(vec!["x|y,z"], OrderState::Cancelled(CancelReason::Expired))
        );
        assert_eq!(
            parse_journal_member("3-A,3-B|pending"),
            orders(vec!["3-A", "3-B"], OrderState::Pending)
        );
        let op = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        assert_eq!(
            parse_journal_member(&restock_member(op, -5)),
            Some(JournalEntry::Restock {
                op_id: op,
                delta: -5
            })
        );
        // A foreign reference that starts like a restock is still an order.
        assert_eq!(
            parse_journal_member("restock|x|paid"),
            orders(vec!["restock|x"], OrderState::Paid)
        );
        assert_eq!(parse_journal_member("restock|short|5"), None);
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
}
