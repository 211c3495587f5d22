//! Buyer identity from bearer tokens (`FLASHSALE_BUYER_AUTH=jwt`): the buyer is the token's
//! `sub`, for per-user limits, idempotency and order ownership.
//!
//! Rules (each tested below): a token is valid only when its signature verifies with a key of
//! its own `alg` family: HS256 with `FLASHSALE_JWT_HS256_SECRET` and nothing else, `EdDSA`,
//! `ES256` and the RSA algorithms with the JWKS key its `kid` names, of the matching key type
//! (so `none`, and a public key used as an HMAC secret, are refused); `exp` is present and in
//! the future and `nbf`, when present, has passed (60 s leeway); `iss` and `aud` match the
//! configured ones when set; `sub` is 1 to 64 characters. Verification is `jsonwebtoken`'s.
//!
//! Cost: an Ed25519 or RSA check costs tens of microseconds, more than a whole reservation,
//! and a buyer sends the same token many times. So each worker keeps the tokens it verified
//! ([`TokenCache`]: a keyed 128-bit hash of the token → `sub` and `exp`) and a repeated token
//! costs one hash of it and one lookup. Only valid tokens are remembered; the cache is bounded and forgets a token at
//! its `exp`.

use crate::config::JwtConfig;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Allowed clock difference on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Verified tokens a worker remembers at most: ~100 bytes each (a 16-byte digest, the
/// buyer's `sub` and `exp`), so ~13 MiB at most; more than the buyers of a large sale, so a
/// repeated token is a lookup, not a signature check.
pub const CACHE_TOKENS: usize = 131_072;
/// The longest `sub` accepted (the length of a `user_id`).
pub const MAX_SUB_CHARS: usize = 64;

/// Why a request carries no valid buyer identity (each is a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No `Authorization: Bearer` header.
    Missing,
    /// The token has expired.
    Expired,
    /// Anything else: malformed, bad signature, unknown `kid`, wrong `alg`, `iss` or `aud`,
    /// not yet valid, no usable `sub`.
    Invalid,
}

/// A verified buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buyer {
    pub sub: Rc<str>,
    /// When the token expires (Unix seconds).
    pub exp: u64,
}

/// The keys and claims tokens are checked against; built once at start, shared by workers.
pub struct Verifier {
    hs256: Option<DecodingKey>,
    /// JWKS keys by `kid`, with the algorithms each may verify.
    by_kid: HashMap<String, (DecodingKey, Vec<Algorithm>)>,
    issuer: Option<String>,
    audience: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl Verifier {
    /// Reads the keys (the JWKS file, if configured). An error names the variable.
    pub fn from_config(cfg: &JwtConfig) -> Result<Verifier, String> {
        let hs256 = cfg
            .hs256_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        let mut by_kid = HashMap::new();
        if let Some(path) = &cfg.public_keys {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "FLASHSALE_JWT_PUBLIC_KEYS={}: cannot read it: {e}",
                    path.display()
                )
            })?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
                format!(
                    "FLASHSALE_JWT_PUBLIC_KEYS={}: not a JWKS document: {e}",
                    path.display()
                )
            })?;
            for jwk in &set.keys {
                let kid = jwk.common.key_id.clone().ok_or_else(|| {
                    format!(
                        "FLASHSALE_JWT_PUBLIC_KEYS={}: every key needs a \"kid\"",
                        path.display()
                    )
                })?;
                let algs = algorithms_for(&jwk.algorithm).ok_or_else(|| {
                    format!(
                        "FLASHSALE_JWT_PUBLIC_KEYS={}: key {kid:?} is not an Ed25519, P-256 or RSA public key",
                        path.display()
                    )
                })?;
                // A key that names its algorithm may verify only that one.
                let algs = match jwk.common.key_algorithm.map(|a| a.to_string()) {
                    Some(named) => algs
                        .into_iter()
                        .filter(|a| format!("{a:?}") == named)
                        .collect(),
                    None => algs,
                };
                if algs.is_empty() {
                    return Err(format!(
                        "FLASHSALE_JWT_PUBLIC_KEYS={}: key {kid:?} names an algorithm its type cannot use",
                        path.display()
                    ));
                }
                let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                    format!(
                        "FLASHSALE_JWT_PUBLIC_KEYS={}: key {kid:?}: {e}",
                        path.display()
                    )
                })?;
                by_kid.insert(kid, (key, algs));
            }
        }
        Ok(Verifier {
            hs256,
            by_kid,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
        })
    }

    /// Checks a token (the text after `Bearer `).
    pub fn verify(&self, token: &str) -> Result<Buyer, Rejected> {
        let header = decode_header(token).map_err(|_| Rejected::Invalid)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::HS384 | Algorithm::HS512 => None,
            alg => header
                .kid
                .as_deref()
                .and_then(|kid| self.by_kid.get(kid))
                .filter(|(_, algs)| algs.contains(&alg))
                .map(|(k, _)| k),
        }
        .ok_or(Rejected::Invalid)?;
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                v.required_spec_claims.insert("aud".into());
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        let data = decode::<Claims>(token, key, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => Rejected::Expired,
            _ => Rejected::Invalid,
        })?;
        let sub = data.claims.sub;
        let n = sub.chars().count();
        if n == 0 || n > MAX_SUB_CHARS || sub.chars().any(char::is_control) {
            return Err(Rejected::Invalid);
        }
        Ok(Buyer {
            sub: sub.into(),
            exp: data.claims.exp,
        })
    }
}

/// The algorithms a JWKS key's type may verify.
fn algorithms_for(params: &AlgorithmParameters) -> Option<Vec<Algorithm>> {
    use jsonwebtoken::jwk::{EllipticCurve, OctetKeyPairType};
    match params {
        AlgorithmParameters::OctetKeyPair(p)
            if p.key_type == OctetKeyPairType::OctetKeyPair
                && p.curve == EllipticCurve::Ed25519 =>
        {
            Some(vec![Algorithm::EdDSA])
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(vec![Algorithm::ES256])
        }
        AlgorithmParameters::RSA(_) => Some(vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ]),
        _ => None,
    }
}

/// The tokens one worker has verified, by a keyed 128-bit hash of their text.
///
/// Keyed SipHash-1-3 with a random key per cache: finding a token with the hash of another
/// buyer's token means guessing 128 bits of a keyed PRF's output blind, so the hash stands
/// for the text. Storing 16 bytes instead of a 200-byte token lets a worker keep the whole
/// crowd of a large sale ([`CACHE_TOKENS`]) in a few MiB.
pub struct TokenCache {
    key: (u64, u64),
    verified: RefCell<HashMap<u128, Buyer>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        // RandomState's keys come from the OS's randomness: two of its outputs make a key
        // nobody outside the process knows.
        use std::hash::BuildHasher;
        let random = std::collections::hash_map::RandomState::new();
        TokenCache {
            key: (random.hash_one(0u8), random.hash_one(1u8)),
            verified: RefCell::default(),
        }
    }
}

impl TokenCache {
    fn digest(&self, token: &str) -> u128 {
        use std::hash::Hasher;
        let mut h = siphasher::sip128::SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(token.as_bytes());
        siphasher::sip128::Hasher128::finish128(&h).as_u128()
    }

    /// The buyer of `token`, verified now or remembered from before; `now` in Unix seconds.
    pub fn buyer(&self, verifier: &Verifier, token: &str, now: u64) -> Result<Buyer, Rejected> {
        let digest = self.digest(token);
        if let Some(b) = self.verified.borrow().get(&digest)
            && now <= b.exp.saturating_add(LEEWAY_SECS)
        {
            return Ok(b.clone());
        }
        let b = verifier.verify(token)?;
        let mut cache = self.verified.borrow_mut();
        if cache.len() >= CACHE_TOKENS {
            cache.retain(|_, b| now <= b.exp.saturating_add(LEEWAY_SECS));
            if cache.len() >= CACHE_TOKENS {
                cache.clear();
            }
        }
        cache.insert(digest, b.clone());
        Ok(b)
    }

    pub fn len(&self) -> usize {
        self.verified.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One worker's verification of buyers (`FLASHSALE_BUYER_AUTH=jwt`): the process's verifier
/// and this worker's cache of the tokens it verified.
pub struct Buyers {
    /// `None` in `none` mode: the body's `user_id` is taken as given.
    verifier: Option<std::sync::Arc<Verifier>>,
    /// Tokens verified on this worker, so a signature is checked once per token.
    tokens: TokenCache,
}

impl Buyers {
    pub fn new(verifier: Option<std::sync::Arc<Verifier>>) -> Buyers {
        Buyers {
            verifier,
            tokens: TokenCache::default(),
        }
    }

    /// The buyer a request's `Authorization` header names (`jwt` mode), verified once per
    /// token on this worker; `None` in `none` mode, where the body names the buyer.
    pub fn of_request(&self, authorization: Option<&[u8]>) -> Result<Option<Buyer>, Rejected> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        let token = bearer(authorization)?;
        let now = crate::time::now_ms().max(0) as u64 / 1000;
        self.tokens.buyer(verifier, token, now).map(Some)
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&[u8]>) -> Result<&str, Rejected> {
    let v = std::str::from_utf8(header.ok_or(Rejected::Missing)?).map_err(|_| Rejected::Invalid)?;
    let (scheme, token) = v.trim().split_once(' ').ok_or(Rejected::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejected::Invalid);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Rejected::Missing);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> Verifier {
        Verifier::from_config(&JwtConfig {
            hs256_secret: Some(Secret::new("k".into())),
            public_keys: None,
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
        })
        .unwrap()
    }

    #[test]
    fn hs256_tokens_and_their_claims() {
        let v = verifier(Some("shop"), Some("sale"));
        let good =
            serde_json::json!({"sub": "alice", "exp": now() + 600, "iss": "shop", "aud": "sale"});
        assert_eq!(&*v.verify(&hs("k", good.clone())).unwrap().sub, "alice");
        assert_eq!(v.verify(&hs("other", good)), Err(Rejected::Invalid));
        let expired =
            serde_json::json!({"sub": "a", "exp": now() - 120, "iss": "shop", "aud": "sale"});
        assert_eq!(v.verify(&hs("k", expired)), Err(Rejected::Expired));
        let within_leeway =
            serde_json::json!({"sub": "a", "exp": now() - 30, "iss": "shop", "aud": "sale"});
        assert!(v.verify(&hs("k", within_leeway)).is_ok());
        for bad in [
            serde_json::json!({"sub": "a", "iss": "shop", "aud": "sale"}),
            serde_json::json!({"sub": "a", "exp": now() + 600, "iss": "other", "aud": "sale"}),
            serde_json::json!({"sub": "a", "exp": now() + 600, "aud": "sale"}),
            serde_json::json!({"sub": "a", "exp": now() + 600, "iss": "shop", "aud": "other"}),
            serde_json::json!({"sub": "a", "exp": now() + 600, "iss": "shop"}),
            serde_json::json!({"sub": "a", "exp": now() + 600, "nbf": now() + 600, "iss": "shop", "aud": "sale"}),
            serde_json::json!({"exp": now() + 600, "iss": "shop", "aud": "sale"}),
            serde_json::json!({"sub": "", "exp": now() + 600, "iss": "shop", "aud": "sale"}),
            serde_json::json!({"sub": "x".repeat(65), "exp": now() + 600, "iss": "shop", "aud": "sale"}),
        ] {
            assert_eq!(
                v.verify(&hs("k", bad.clone())),
                Err(Rejected::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn alg_none_and_garbage_are_invalid() {
        let v = verifier(None, None);
        let claims = serde_json::json!({"sub": "a", "exp": now() + 600});
        let body = hs("k", claims);
        let parts: Vec<&str> = body.split('.').collect();
        // {"alg":"none","typ":"JWT"} with the same claims and no signature.
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert_eq!(v.verify(&none), Err(Rejected::Invalid));
        for junk in ["", "a.b.c", "not a token", "....."] {
            assert_eq!(v.verify(junk), Err(Rejected::Invalid), "{junk:?}");
        }
    }

    #[test]
    fn the_cache_answers_repeats_and_forgets_at_exp() {
        let v = verifier(None, None);
        let c = TokenCache::default();
        let t = hs("k", serde_json::json!({"sub": "bob", "exp": now() + 600}));
        assert_eq!(&*c.buyer(&v, &t, now()).unwrap().sub, "bob");
        assert_eq!(c.len(), 1);
        // A verifier with other keys would refuse it: a hit does not verify again.
        let other = Verifier::from_config(&JwtConfig {
            hs256_secret: Some(Secret::new("changed".into())),
            public_keys: None,
            issuer: None,
            audience: None,
        })
        .unwrap();
        assert!(c.buyer(&other, &t, now()).is_ok());
        // After its exp (and the leeway) the cache does not vouch for it.
        assert_eq!(
            c.buyer(&other, &t, now() + 600 + LEEWAY_SECS + 1),
            Err(Rejected::Invalid)
        );
        assert!(c.buyer(&v, "garbage", now()).is_err());
        assert_eq!(c.len(), 1, "failures are not remembered");
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(Some(b"Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some(b"bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(None), Err(Rejected::Missing));
        assert_eq!(bearer(Some(b"Basic abc")), Err(Rejected::Invalid));
        assert_eq!(bearer(Some(b"Bearer")), Err(Rejected::Invalid));
        assert_eq!(bearer(Some(b"Bearer \xff")), Err(Rejected::Invalid));
    }
}
