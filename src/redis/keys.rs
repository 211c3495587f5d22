//! Key names: every key of product P carries the hash tag `{p:P}` under the configured prefix
//! (the table is in `redis/mod.rs`).

use crate::domain::ProductId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Builds key names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

/// The fixed keys of one product.
#[derive(Debug)]
pub struct ProductKeys {
    pub stock: String,
    pub product: String,
    pub pending: String,
    pub journal: String,
    pub users: String,
}

/// Products whose key names a [`KeyCache`] keeps; past this it starts over, so requests naming
/// random products cannot grow it without bound.
const KEY_CACHE_MAX: usize = 4096;

/// One worker's product key names, built once per product instead of per request.
pub struct KeyCache {
    keys: Keys,
    by_product: RefCell<HashMap<ProductId, Rc<ProductKeys>>>,
}

impl KeyCache {
    pub fn new(keys: Keys) -> KeyCache {
        KeyCache {
            keys,
            by_product: RefCell::new(HashMap::new()),
        }
    }

    /// The fixed key names of a product.
    pub fn product(&self, pid: ProductId) -> Rc<ProductKeys> {
        if let Some(k) = self.by_product.borrow().get(&pid) {
            return k.clone();
        }
        let k = Rc::new(self.keys.product_keys(pid));
        let mut cache = self.by_product.borrow_mut();
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(pid, k.clone());
        k
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    fn tagged(&self, pid: ProductId, suffix: &str) -> String {
        format!("{}:{{p:{}}}:{}", self.prefix, pid, suffix)
    }

    pub fn product_keys(&self, pid: ProductId) -> ProductKeys {
        ProductKeys {
            stock: self.tagged(pid, "stock"),
            product: self.tagged(pid, "product"),
            pending: self.tagged(pid, "pending"),
            journal: self.tagged(pid, "journal"),
            users: self.tagged(pid, "users"),
        }
    }

    /// The start of every order-record key of a product (scripts append the reference).
    pub fn order_prefix(&self, pid: ProductId) -> String {
        format!("{}:{{p:{}}}:order:", self.prefix, pid)
    }

    /// Holds the identity of the PostgreSQL database whose data this prefix holds (see
    /// `check`).
    pub fn database_marker(&self) -> String {
        format!("{}:database", self.prefix)
    }

    /// Holds the `run_id` of the Redis process whose data was last checked (see `check`).
    pub fn run_id_marker(&self) -> String {
        format!("{}:redis_run_id", self.prefix)
    }

    /// The database and restart markers of one master of a cluster: `tag` names one of its
    /// slots (see `check`).
    pub fn node_markers(&self, tag: &str) -> (String, String) {
        (
            format!("{}:{{{}}}:database", self.prefix, tag),
            format!("{}:{{{}}}:redis_run_id", self.prefix, tag),
        )
    }

    pub fn order(&self, pid: ProductId, reference: &str) -> String {
        format!("{}:{{p:{}}}:order:{}", self.prefix, pid, reference)
    }

    /// The key remembering an Idempotency-Key of one buyer (`scope`) for one product. The
    /// client's text never appears in the name: it is hashed with the buyer (SHA-256, the
    /// first 128 bits in hex), so a key cannot look like another kind of key, cannot address
    /// another buyer's entry, and takes 32 bytes however long it was.
    pub fn idem(&self, pid: ProductId, scope: &str, key: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(scope.as_bytes());
        h.update([0u8]);
        h.update(key.as_bytes());
        let digest = h.finalize();
        format!(
            "{}:{{p:{}}}:idem:{}",
            self.prefix,
            pid,
            hex::encode(&digest[..16])
        )
    }

    /// The SCAN pattern matching one kind of product key across all products. It matches
    /// more than that kind (`*` spans `}:order:x}:` in a key whose reference ends in
    /// `}:pending`), so every key a scan finds is checked with [`Keys::product_if`].
    pub fn scan_pattern(&self, suffix: &str) -> String {
        // The prefix is validated to hold no glob characters.
        format!("{}:{{p:*}}:{}", self.prefix, suffix)
    }

    /// The product of `key` when it is exactly the `kind` key of a product (`pending`,
    /// `journal`, ...), else `None`.
    pub fn product_if(&self, key: &[u8], kind: &str) -> Option<ProductId> {
        self.split_product_key(key)
            .filter(|(_, k)| *k == kind)
            .map(|(pid, _)| pid)
    }

    /// The product of a product key and what follows its tag (`stock`, `pending`, …,
    /// `order:<reference>`).
    pub fn split_product_key<'k>(&self, key: &'k [u8]) -> Option<(ProductId, &'k str)> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{p:")?;
        let (pid, kind) = rest.split_once("}:")?;
        Some((ProductId::parse(pid)?, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_cache_builds_each_products_names_once_and_stays_bounded() {
        let c = KeyCache::new(Keys::new("fs"));
        let p = ProductId::new(7).unwrap();
        let a = c.product(p);
        assert!(Rc::ptr_eq(&a, &c.product(p)), "built once");
        assert_eq!(a.stock, Keys::new("fs").product_keys(p).stock);
        for i in 1..=(2 * KEY_CACHE_MAX as i64) {
            c.product(ProductId::new(i).unwrap());
        }
        assert!(c.by_product.borrow().len() <= KEY_CACHE_MAX);
    }

    #[test]
    fn keys_share_the_product_hash_tag() {
        let k = Keys::new("fs");
        let p = ProductId::new(12).unwrap();
        let pk = k.product_keys(p);
        assert_eq!(pk.stock, "fs:{p:12}:stock");
        assert_eq!(k.order(p, "12-X"), "fs:{p:12}:order:12-X");
        assert_eq!(k.product_if(pk.journal.as_bytes(), "journal"), Some(p));
        assert_eq!(k.product_if(pk.journal.as_bytes(), "pending"), None);
        assert_eq!(k.product_if(b"other:{p:12}:journal", "journal"), None);
        // Key text that ends like another kind is not that kind.
        let tricky = k.order(p, "x}:pending");
        assert_eq!(k.product_if(tricky.as_bytes(), "pending"), None);
        let idem = k.idem(p, "user:a", "x}:journal");
        assert_eq!(k.product_if(idem.as_bytes(), "journal"), None);
        assert!(
            !idem.contains("x}:journal"),
            "client text never appears in a key"
        );
        assert_ne!(
            idem,
            k.idem(p, "user:b", "x}:journal"),
            "keys are per buyer"
        );
        assert_ne!(
            idem,
            k.idem(ProductId::new(13).unwrap(), "user:a", "x}:journal")
        );
        assert_eq!(k.scan_pattern("pending"), "fs:{p:*}:pending");
        assert_eq!(k.split_product_key(pk.stock.as_bytes()), Some((p, "stock")));
        assert_eq!(
            k.split_product_key(k.order(p, "x}:stock").as_bytes()),
            Some((p, "order:x}:stock"))
        );
        assert_eq!(k.split_product_key(b"fs:{p:x}:stock"), None);
    }
}
