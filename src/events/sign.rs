//! Standard Webhooks 1.0 signatures: `v1,<base64 of HMAC-SHA256 over "<id>.<timestamp>.<body>">`,
//! keyed with the base64-decoded part of a `whsec_` secret after its prefix; several
//! space-separated during a secret rotation. Hand-written because the standard's Rust crate
//! is not kept up; it is one HMAC (the `hmac` crate) and two base64 steps.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The `webhook-signature` value of one delivery, signed with each secret in `secrets`
/// (`whsec_...`); a secret that is not one is skipped.
pub fn signature(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = String::new();
    for secret in secrets {
        let Some(key) = secret
            .strip_prefix("whsec_")
            .and_then(|k| B64.decode(k).ok())
        else {
            continue;
        };
        let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(&key) else {
            continue;
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&B64.encode(mac.finalize().into_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn matches_the_reference_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn two_secrets_sign_twice_and_junk_is_skipped() {
        let a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let s = signature(&[a, "not-a-secret", a], "id", 1, b"{}");
        let parts: Vec<&str> = s.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], parts[1]);
        assert!(parts[0].starts_with("v1,"));
    }
}
