//! `lua/product.lua`: a product and its live reservable stock, read in one step.

use crate::domain::{ProductId, SaleState};
use crate::redis::keys::Keys;
use crate::redis::reply::{ReplyError, array, as_int, as_string};
use crate::redis::scripts::{NOT_LOADED, ScriptCall, ScriptId};
use redis_async::resp::RespValue;

/// A product as Redis holds it, with its live reservable stock and its sale's state by
/// Redis's clock.
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
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
    pub state: SaleState,
}

pub fn product_call(keys: &Keys, pid: ProductId) -> ScriptCall {
    let pk = keys.product_keys(pid);
    let mut c = ScriptCall::new(ScriptId::Product);
    c.key(&pk.stock).key(&pk.product);
    c
}

/// An optional number: `""` is none.
fn opt_int(s: &str, what: &str) -> Result<Option<i64>, ReplyError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| ReplyError(format!("{what} {s:?}")))
}

/// Decodes `product.lua`; `None` when the product is not loaded.
pub fn decode_product(v: RespValue, pid: ProductId) -> Result<Option<ProductView>, ReplyError> {
    if let RespValue::Integer(NOT_LOADED) = v {
        return Ok(None);
    }
    let items = array(v, "product")?;
    if items.len() != 10 {
        return Err(ReplyError("product: wrong field count".into()));
    }
    let mut f = items.into_iter();
    let mut next = || f.next().ok_or_else(|| ReplyError("short product".into()));
    let stock = as_int(&next()?)?;
    let name = as_string(next()?)?;
    let price_cents = as_int(&next()?)?;
    let max_per_order = as_int(&next()?)?;
    let per_user_limit = opt_int(&as_string(next()?)?, "limit")?;
    let created_at = as_string(next()?)?;
    let updated_at = as_string(next()?)?;
    let starts = opt_int(&as_string(next()?)?, "starts")?;
    let ends = opt_int(&as_string(next()?)?, "ends")?;
    let now = as_int(&next()?)?;
    Ok(Some(ProductView {
        id: pid,
        stock,
        name,
        price_cents,
        max_per_order,
        per_user_limit,
        created_at,
        updated_at,
        sale_starts_at_ms: starts,
        sale_ends_at_ms: ends,
        state: SaleState::at(now, starts, ends, stock),
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
            bulk("2000"),
            bulk(""),
            bulk("1000"),
        ]);
        let p = decode_product(p, pid()).unwrap().unwrap();
        assert_eq!(
            (p.stock, p.price_cents, p.max_per_order, p.per_user_limit),
            (5, 100, 10, None)
        );
        assert_eq!(
            (p.sale_starts_at_ms, p.sale_ends_at_ms, p.state),
            (Some(2000), None, SaleState::Upcoming)
        );
        assert_eq!(decode_product(int(7), pid()).unwrap(), None);
    }
}
