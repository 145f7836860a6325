//! Slot leases: how replicas of the service agree on which one runs a
//! schedule slot. PostgreSQL has session advisory locks for it; SQLite is
//! single-instance and needs nothing. The scheduler only sees the trait.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::error::Error;

/// The advisory lock key ("bsvcschd"): one per database, shared by every
/// replica of this service.
pub const LOCK_KEY: i64 = 0x6273_7663_7363_6864;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands out claim attempts; one attempt serves one slot's retries.
pub trait SlotLease: Send + Sync {
    fn attempt(&self) -> Box<dyn ClaimAttempt>;
}

/// Repeated tries at one slot. Dropping it gives up whatever it holds.
#[async_trait]
pub trait ClaimAttempt: Send {
    /// One try: the claim, or None when another replica holds the slot or
    /// the database cannot be reached yet (logged here).
    async fn try_once(&mut self) -> Option<SlotClaim>;
}

/// A claimed slot; releasing (or dropping) it frees the slot.
pub struct SlotClaim(Option<PgConnection>);

impl SlotClaim {
    /// A claim nobody else competes for.
    pub fn local() -> Self {
        SlotClaim(None)
    }

    pub async fn release(self) {
        if let Some(conn) = self.0 {
            // Ending the session releases the lock (as does dropping it, if
            // the server cannot be told in time).
            match tokio::time::timeout(Duration::from_secs(5), conn.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "closing the schedule lock connection"),
                Err(_) => tracing::debug!("closing the schedule lock connection timed out"),
            }
        }
    }
}

/// SQLite: a single instance claims every slot.
pub struct LocalLease;

impl SlotLease for LocalLease {
    fn attempt(&self) -> Box<dyn ClaimAttempt> {
        Box::new(LocalLease)
    }
}

#[async_trait]
impl ClaimAttempt for LocalLease {
    async fn try_once(&mut self) -> Option<SlotClaim> {
        Some(SlotClaim::local())
    }
}

/// PostgreSQL: a session advisory lock on a connection of its own.
pub struct AdvisoryLease {
    options: PgConnectOptions,
}

impl AdvisoryLease {
    pub fn new(options: &PgConnectOptions) -> Self {
        Self {
            options: options.clone().application_name("backup-service scheduler"),
        }
    }
}

impl SlotLease for AdvisoryLease {
    fn attempt(&self) -> Box<dyn ClaimAttempt> {
        Box::new(AdvisoryAttempt {
            options: self.options.clone(),
            conn: None,
            warned: false,
        })
    }
}

struct AdvisoryAttempt {
    options: PgConnectOptions,
    /// Kept between tries while another replica holds the lock.
    conn: Option<PgConnection>,
    /// Connection problems are logged once per slot.
    warned: bool,
}

#[async_trait]
impl ClaimAttempt for AdvisoryAttempt {
    async fn try_once(&mut self) -> Option<SlotClaim> {
        if self.conn.is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options))
                .await
            {
                Ok(Ok(c)) => self.conn = Some(c),
                Ok(Err(e)) if !self.warned => {
                    self.warned = true;
                    let e = Error::database("connecting for the schedule lock", &e);
                    tracing::warn!(error = %e.message, "cannot claim the slot yet");
                }
                Err(_) if !self.warned => {
                    self.warned = true;
                    tracing::warn!("connecting for the schedule lock timed out");
                }
                _ => {}
            }
        }
        let c = self.conn.as_mut()?;
        let tried = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *c)
            .await;
        match tried {
            Ok(true) => self.conn.take().map(|c| SlotClaim(Some(c))),
            Ok(false) => None,
            // The server has no advisory locks (CockroachDB): undefined
            // function or feature not supported.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42883" | "0A000")) =>
            {
                tracing::warn!(
                    error = %e,
                    "advisory locks unavailable: claiming the slot locally; \
                     give only one replica a schedule"
                );
                Some(SlotClaim::local())
            }
            Err(e) => {
                let e = Error::database("schedule lock", &e);
                tracing::warn!(error = %e.message, "schedule lock unavailable; retrying");
                self.conn = None;
                None
            }
        }
    }
}
