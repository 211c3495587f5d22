//! PostgreSQL plumbing shared by the writer and the reader threads: how a failure is
//! classified (retry, refuse, or fall back from COPY).

/// How a PostgreSQL failure should be handled.
#[derive(Debug)]
pub enum PgError {
    /// Connection lost, server shutting down, deadlock, out of resources: retrying helps.
    Transient(String),
    /// The data was refused (a constraint): retrying the same rows cannot help.
    Rejected(String),
    /// The COPY fast path met a row that exists already: write the batch with INSERT instead.
    Duplicate,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgError::Transient(e) => write!(f, "{e}"),
            PgError::Rejected(e) => write!(f, "rejected: {e}"),
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
            } else {
                PgError::Rejected(format!("{code}: {}", db.message()))
            }
        }
        None => PgError::Transient(e.to_string()),
    }
}
