//! `POST /api/orders/{order_reference}/cancel`: a buyer gives a pending order back (no body;
//! one sent is ignored). In `jwt` mode only the order's buyer may: anyone else is told it
//! does not exist, as for `GET /api/orders/{order_reference}`.

use crate::api::order_status::{body, could_be_reference};
use crate::http::request::Request;
use crate::http::response::{ApiError, Response};
use crate::lifecycle::cancel::{CancelOutcome, cancel};
use crate::local::Local;

pub async fn post(w: &Local, req: &Request<'_>, reference: &str) -> Result<Response, ApiError> {
    let buyer = w
        .buyers
        .of_request(req.authorization)
        .map_err(ApiError::Unauthorized)?;
    if !could_be_reference(reference) {
        return Err(ApiError::OrderNotFound);
    }
    match cancel(w, reference, buyer.as_ref().map(|b| &*b.sub)).await? {
        CancelOutcome::Cancelled(o) => Ok(Response::json(200, &body(&o))),
        CancelOutcome::NotCancellable(o) => Err(ApiError::OrderNotCancellable(o.state.status())),
        CancelOutcome::NotFound => Err(ApiError::OrderNotFound),
    }
}
