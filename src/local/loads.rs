//! What one worker knows about reading from PostgreSQL what Redis lacks: the product loads in
//! progress (one per product at a time, [`Flights`]) and what PostgreSQL recently said does
//! not exist ([`Misses`]), so that a flood of requests for an unloaded or unknown product asks
//! PostgreSQL once.

use crate::domain::{Failure, ProductId};
use crate::local::flight::{Flights, Joined};
use crate::local::misses::Misses;
use std::time::Instant;

/// The result every waiter of a load gets: whether the product exists.
pub type LoadResult = Result<bool, Failure>;

#[derive(Default)]
pub struct Loads {
    /// Loads in progress, so concurrent requests for an unloaded product ask the writer once.
    flights: Flights<ProductId, LoadResult>,
    /// Products PostgreSQL recently said it does not have.
    missing_products: Misses<ProductId>,
    /// Order references PostgreSQL recently said it does not have.
    missing_orders: Misses<String>,
}

impl Loads {
    /// Joins the load of `pid` in progress on this worker, or leads a new one.
    pub fn join(&self, pid: ProductId) -> Joined<'_, ProductId, LoadResult> {
        self.flights.join(pid)
    }

    /// PostgreSQL said within the last second that it has no product `pid`.
    pub fn product_missing(&self, pid: ProductId, now: Instant) -> bool {
        self.missing_products.recent(&pid, now)
    }

    pub fn remember_missing_product(&self, pid: ProductId, now: Instant) {
        self.missing_products.remember(pid, now);
    }

    /// The product exists now (the admin API just created or changed it).
    pub fn forget_missing_product(&self, pid: ProductId) {
        self.missing_products.forget(&pid);
    }

    /// PostgreSQL said within the last second that it has no order `reference`.
    pub fn order_missing(&self, reference: &str, now: Instant) -> bool {
        self.missing_orders.recent(reference, now)
    }

    pub fn remember_missing_order(&self, reference: String, now: Instant) {
        self.missing_orders.remember(reference, now);
    }
}
