//! SCAN over the keyspace, one step at a time.

use crate::redis::cmd::command;
use crate::redis::reply::{ReplyError, array, as_string, bad};
use redis_async::resp::RespValue;

// SCAN

/// `SCAN <cursor> MATCH <pattern> COUNT 1000`.
pub fn scan_cmd(cursor: &str, pattern: &str) -> Vec<u8> {
    command(&["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"])
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::redis::reply::fake::{bulk, int};

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
}
