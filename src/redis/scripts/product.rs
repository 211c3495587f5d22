//! `lua/product.lua`: a product and its live reservable stock, read in one step.

use crate::domain::ProductId;
use crate::redis::keys::Keys;
use crate::redis::reply::{ReplyError, array, as_int, as_string};
use crate::redis::scripts::{NOT_LOADED, ScriptCall, ScriptId};
use redis_async::resp::RespValue;

/// A product as Redis holds it, with its live reservable stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductView {
    pub id: ProductId,
    pub stock: i64,
    pub name: String,
    pub price_cents: i64,
    pub max_per_order: i64,
    pub per_user_limit: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn product_call(keys: &Keys, pid: ProductId) -> ScriptCall {
    let pk = keys.product_keys(pid);
    let mut c = ScriptCall::new(ScriptId::Product);
    c.key(&pk.stock).key(&pk.product);
    c
}

/// Decodes `product.lua`; `None` when the product is not loaded.
pub fn decode_product(v: RespValue, pid: ProductId) -> Result<Option<ProductView>, ReplyError> {
    if let RespValue::Integer(NOT_LOADED) = v {
        return Ok(None);
    }
    let items = array(v, "product")?;
    if items.len() != 7 {
        return Err(ReplyError("product: wrong field count".into()));
    }
    let mut f = items.into_iter();
    let mut next = || f.next().ok_or_else(|| ReplyError("short product".into()));
    let stock = as_int(&next()?)?;
    let name = as_string(next()?)?;
    let price_cents = as_int(&next()?)?;
    let max_per_order = as_int(&next()?)?;
    let limit = as_string(next()?)?;
    Ok(Some(ProductView {
        id: pid,
        stock,
        name,
        price_cents,
        max_per_order,
        per_user_limit: if limit.is_empty() {
            None
        } else {
            Some(
                limit
                    .parse()
                    .map_err(|_| ReplyError(format!("limit {limit:?}")))?,
            )
        },
        created_at: as_string(next()?)?,
        updated_at: as_string(next()?)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::redis::reply::fake::{bulk, int};

    #[test]
    fn products_decode() {
        let pid = || ProductId::new(3).unwrap();
        let p = RespValue::Array(vec![
            bulk("5"),
            bulk("Item"),
            bulk("100"),
            bulk("10"),
            bulk(""),
            bulk("2026-01-01T00:00:00Z"),
            bulk("2026-01-01T00:00:00Z"),
        ]);
        let p = decode_product(p, pid()).unwrap().unwrap();
        assert_eq!(
            (p.stock, p.price_cents, p.max_per_order, p.per_user_limit),
            (5, 100, 10, None)
        );
        assert_eq!(decode_product(int(7), pid()).unwrap(), None);
    }
}
