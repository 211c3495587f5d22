//! PostgreSQL plumbing shared by the writer and the reader threads: how a failure is
//! classified (retry, refuse, or fall back from COPY), and rows both read.

use crate::domain::LatePayment;
use crate::time::from_system_time;
use std::time::SystemTime;

/// How a PostgreSQL failure should be handled.
#[derive(Debug)]
pub enum PgError {
    /// Connection lost, server shutting down, deadlock, out of resources: retrying helps.
    Transient(String),
    /// The data was refused (a constraint): retrying the same rows cannot help.
    Rejected(String),
    /// A value of the request is not one PostgreSQL can take (SQLSTATE class 22, data
    /// exception: a NUL in text, a number or a time out of range): the client's input.
    Data(String),
    /// The COPY fast path met a row that exists already: write the batch with INSERT instead.
    Duplicate,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgError::Transient(e) => write!(f, "{e}"),
            PgError::Rejected(e) => write!(f, "rejected: {e}"),
            PgError::Data(e) => write!(f, "data exception: {e}"),
            PgError::Duplicate => f.write_str("duplicate order reference in COPY"),
        }
    }
}

pub fn classify(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        Some(db) if db.code().code() == "23505" => PgError::Duplicate,
        Some(db) => {
            let code = db.code().code();
            // 08 connection, 40 transaction rollback (deadlock, serialization), 53 resources,
            // 57 operator intervention (shutdown), 58 system error.
            if ["08", "40", "53", "57", "58"]
                .iter()
                .any(|c| code.starts_with(c))
            {
                PgError::Transient(format!("{code}: {}", db.message()))
            } else if code.starts_with("22") {
                PgError::Data(format!("{code}: {}", db.message()))
            } else {
                PgError::Rejected(format!("{code}: {}", db.message()))
            }
        }
        None => PgError::Transient(e.to_string()),
    }
}

/// A `late_payments` row: reference, amount, created, refunded.
pub fn late_payment(r: &tokio_postgres::Row) -> LatePayment {
    LatePayment {
        order_reference: r.get(0),
        amount_cents: r.get(1),
        created_at_ms: from_system_time(r.get(2)),
        refunded_at_ms: r.get::<_, Option<SystemTime>>(3).map(from_system_time),
    }
}
