//! Maintenance mode: while on, restores may run and backups are neither
//! created nor deleted. Kept in storage so it survives restarts.

use std::sync::RwLock;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::storage::Storage;

/// The storage object holding the state (not a backup id, so the catalog ignores it).
pub const OBJECT_NAME: &str = "maintenance-mode.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceState {
    pub enabled: bool,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub changed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub changed_by: String,
}

#[derive(Default)]
pub struct Maintenance {
    state: RwLock<MaintenanceState>,
}

impl Maintenance {
    pub async fn load(storage: &dyn Storage) -> Result<Self> {
        let state = match storage.get_small(OBJECT_NAME).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal(format!("unreadable {OBJECT_NAME}: {e}")))?,
            Err(e) if e.code == ErrorCode::NotFound => MaintenanceState::default(),
            Err(e) => return Err(e),
        };
        if state.enabled {
            tracing::warn!(reason = %state.reason, "maintenance mode is on");
        }
        Ok(Self {
            state: RwLock::new(state),
        })
    }

    /// Re-reads the state from storage, where another replica may have
    /// changed it; keeps the last known state if storage cannot be read.
    pub async fn refresh(&self, storage: &dyn Storage) -> MaintenanceState {
        let stored = match storage.get_small(OBJECT_NAME).await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(e) if e.code == ErrorCode::NotFound => Some(MaintenanceState::default()),
            Err(_) => None,
        };
        if let (Some(state), Ok(mut current)) = (stored, self.state.write()) {
            *current = state;
        }
        self.get()
    }

    pub fn get(&self) -> MaintenanceState {
        self.state.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn enabled(&self) -> bool {
        self.get().enabled
    }

    /// Stores the new state first, so memory never claims what storage lacks.
    pub async fn set(
        &self,
        storage: &dyn Storage,
        enabled: bool,
        reason: String,
        by: String,
    ) -> Result<MaintenanceState> {
        if reason.chars().count() > 1000 {
            return Err(Error::invalid("reason is longer than 1000 characters"));
        }
        let state = MaintenanceState {
            enabled,
            reason,
            changed_at: Some(Utc::now()),
            changed_by: by,
        };
        let bytes = serde_json::to_vec_pretty(&state)
            .map_err(|e| Error::internal(format!("encoding maintenance state: {e}")))?;
        storage.put_small(OBJECT_NAME, Bytes::from(bytes)).await?;
        if let Ok(mut current) = self.state.write() {
            *current = state.clone();
        }
        tracing::warn!(enabled, by = %state.changed_by, "maintenance mode changed");
        Ok(state)
    }

    /// Refuses `what` while maintenance mode is on.
    pub fn refuse_while_on(&self, what: &str) -> Result<()> {
        let state = self.get();
        if state.enabled {
            let reason = if state.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", state.reason)
            };
            return Err(Error::precondition(format!(
                "maintenance mode is on{reason}: backups cannot be {what} until it is turned off"
            )));
        }
        Ok(())
    }
}
