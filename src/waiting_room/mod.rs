//! A fair opening: the waiting room's pure parts, apart from Redis and HTTP.
//!
//! - [`schedule`]: when each place is admitted (a function of time);
//! - [`credentials`]: tickets and admission tokens, signed and verified without a store.

pub mod credentials;
pub mod schedule;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A pre-queue ticket's draw key: lowercase hex of HMAC-SHA256 keyed with the 32 seed bytes
/// over the `ticket_id`'s text. Places in the pre-queue are the ranks of these keys (as bytes,
/// ascending, from 1), so anyone with the revealed seed and the published ticket ids can
/// recompute the whole draw (`scripts/draw.py`).
pub fn draw_key(seed: &[u8], ticket_id: &str) -> String {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(seed).expect("HMAC takes keys of any length");
    m.update(ticket_id.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draw_key_is_hmac_sha256_of_the_ticket_id_under_the_seed() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            draw_key(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
