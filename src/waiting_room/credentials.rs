//! The waiting room's two credentials, signed by the server and verified without a store:
//! - a **ticket** (`t.<payload>.<mac>`): the buyer's place in one product's queue; whoever
//!   holds it may poll that place (it is a bearer secret: the `ticket_id` inside is public, the
//!   MAC is not);
//! - an **admission token** (`a.<payload>.<mac>`): lets one buyer reserve one product until
//!   it expires (`admission_secs` after the ticket's admission).
//!
//! Payloads are the fields joined by `|` (the buyer last, as it may contain one),
//! base64url-encoded so that the credential is one header- and path-safe word. The MAC is
//! HMAC-SHA256 under a key of its own per kind, derived from the server's secret (stored in
//! PostgreSQL, so every instance and every restart signs alike), cut to 128 bits. Verifying
//! costs one HMAC over ~100 bytes and a base64 decode: no Redis, no lock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of MAC kept: 128 bits, far beyond guessing.
const MAC_BYTES: usize = 16;
/// The longest credential read: anything longer is refused before decoding.
pub const MAX_CREDENTIAL_LEN: usize = 512;

/// What a valid ticket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub product: i64,
    /// Public: listed in the draw.
    pub ticket_id: String,
    pub buyer: String,
}

/// What a valid admission token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub product: i64,
    pub buyer: String,
    /// Unix milliseconds after which the token is refused.
    pub expires_ms: i64,
}

/// Signs and verifies the credentials; built once from the server's secret.
#[derive(Clone)]
pub struct Signer {
    tickets: Hmac<Sha256>,
    admissions: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

fn derive(secret: &[u8], label: &str) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(label.as_bytes());
    let key = m.finalize().into_bytes();
    <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes keys of any length")
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            tickets: derive(secret, "flashsale waiting-room ticket v1"),
            admissions: derive(secret, "flashsale admission token v1"),
        }
    }

    pub fn ticket(&self, t: &Ticket) -> String {
        let payload = format!("{}|{}|{}", t.product, t.ticket_id, t.buyer);
        sign(&self.tickets, 't', &payload)
    }

    pub fn admission(&self, a: &Admission) -> String {
        let payload = format!("{}|{}|{}", a.product, a.expires_ms, a.buyer);
        sign(&self.admissions, 'a', &payload)
    }

    /// The ticket `text` is, if it is one this server signed.
    pub fn verify_ticket(&self, text: &str) -> Option<Ticket> {
        let payload = open(&self.tickets, 't', text)?;
        let mut parts = payload.splitn(3, '|');
        let product = parts.next()?.parse().ok()?;
        let ticket_id = parts.next()?.to_string();
        let buyer = parts.next()?.to_string();
        Some(Ticket {
            product,
            ticket_id,
            buyer,
        })
    }

    /// The admission token `text` is, if this server signed it (expiry not checked here).
    pub fn verify_admission(&self, text: &str) -> Option<Admission> {
        let payload = open(&self.admissions, 'a', text)?;
        let mut parts = payload.splitn(3, '|');
        let product = parts.next()?.parse().ok()?;
        let expires_ms = parts.next()?.parse().ok()?;
        let buyer = parts.next()?.to_string();
        Some(Admission {
            product,
            buyer,
            expires_ms,
        })
    }
}

fn sign(key: &Hmac<Sha256>, kind: char, payload: &str) -> String {
    let body = B64.encode(payload);
    let mut m = key.clone();
    m.update(&[kind as u8, b'.']);
    m.update(body.as_bytes());
    let mac = m.finalize().into_bytes();
    format!("{kind}.{body}.{}", B64.encode(&mac[..MAC_BYTES]))
}

/// The payload of a credential of `kind` whose MAC verifies (in constant time).
fn open(key: &Hmac<Sha256>, kind: char, text: &str) -> Option<String> {
    if text.len() > MAX_CREDENTIAL_LEN {
        return None;
    }
    let rest = text.strip_prefix(kind)?.strip_prefix('.')?;
    let (body, mac) = rest.split_once('.')?;
    let mut given = [0u8; MAC_BYTES + 2];
    let n = B64.decode_slice(mac, &mut given).ok()?;
    if n != MAC_BYTES {
        return None;
    }
    let mut m = key.clone();
    m.update(&[kind as u8, b'.']);
    m.update(body.as_bytes());
    m.verify_truncated_left(&given[..MAC_BYTES]).ok()?;
    String::from_utf8(B64.decode(body).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn tickets_and_tokens_round_trip_and_stay_one_word() {
        let s = signer();
        let t = Ticket {
            product: 7,
            ticket_id: "tk_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            buyer: "alice|with a pipe".into(),
        };
        let text = s.ticket(&t);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{text}"
        );
        assert_eq!(s.verify_ticket(&text), Some(t));
        let a = Admission {
            product: 7,
            buyer: "alice".into(),
            expires_ms: 1_800_000_000_000,
        };
        assert_eq!(s.verify_admission(&s.admission(&a)), Some(a));
    }

    #[test]
    fn forgeries_and_mixups_are_refused() {
        let s = signer();
        let t = Ticket {
            product: 7,
            ticket_id: "tk_1".into(),
            buyer: "alice".into(),
        };
        let text = s.ticket(&t);
        // Another server's secret.
        assert!(
            Signer::new(b"another secret")
                .verify_ticket(&text)
                .is_none()
        );
        // A ticket is not an admission token, and the kinds' keys differ too.
        assert!(s.verify_admission(&text).is_none());
        let as_token = format!("a{}", &text[1..]);
        assert!(s.verify_admission(&as_token).is_none());
        // Any changed byte of the payload or the MAC.
        let (head, mac) = text.rsplit_once('.').unwrap();
        let other = Ticket {
            buyer: "mallory".into(),
            ..t.clone()
        };
        let other_body = s.ticket(&other);
        let (other_head, _) = other_body.rsplit_once('.').unwrap();
        assert!(s.verify_ticket(&format!("{other_head}.{mac}")).is_none());
        let mut bad_mac = mac.to_string().into_bytes();
        bad_mac[0] = if bad_mac[0] == b'A' { b'B' } else { b'A' };
        let bad = format!("{head}.{}", String::from_utf8(bad_mac).unwrap());
        assert!(s.verify_ticket(&bad).is_none());
        for junk in ["", "t.", "t..", "t.x.y", "x.y.z", &"t.".repeat(400)] {
            assert!(s.verify_ticket(junk).is_none(), "{junk}");
        }
    }
}
