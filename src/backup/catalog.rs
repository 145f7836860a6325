//! The in-memory catalog of backups, rebuilt from the manifests in storage
//! at start. Ids sort by creation time, so the map's order is the list order.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::id::BackupId;
use super::record::{BackupRecord, BackupStatus, Progress};
use crate::error::{Error, Result};
use crate::storage::Storage;

pub const MANIFEST_SUFFIX: &str = ".manifest.json";
const MANIFEST_VERSION: u32 = 1;

pub fn manifest_name(id: &BackupId) -> String {
    format!("{id}{MANIFEST_SUFFIX}")
}

/// The sidecar stored beside each backup file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub manifest_version: u32,
    pub record: BackupRecord,
}

impl Manifest {
    pub fn encode(record: &BackupRecord) -> Result<Bytes> {
        let manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            record: record.clone(),
        };
        serde_json::to_vec_pretty(&manifest)
            .map(Bytes::from)
            .map_err(|e| Error::internal(format!("encoding manifest: {e}")))
    }
}

struct Entry {
    record: BackupRecord,
    /// Live progress of a running job.
    progress: Option<Arc<Mutex<Progress>>>,
}

pub struct Stats {
    pub total: u64,
    pub completed: u64,
    pub completed_bytes: u64,
}

#[derive(Default)]
pub struct Catalog {
    entries: RwLock<BTreeMap<String, Entry>>,
}

impl Catalog {
    /// Cleans interrupted writes, then reads every manifest. Data objects
    /// without a manifest are leftovers of interrupted backups and go.
    pub async fn load(storage: &dyn Storage) -> Result<Self> {
        let cleaned = storage.clean_incomplete().await?;
        if cleaned > 0 {
            tracing::warn!(count = cleaned, "removed leftovers of interrupted backups");
        }
        let catalog = Catalog::default();
        // Every backup that has a manifest, readable or not: its data is never removed here.
        let mut has_manifest = std::collections::BTreeSet::new();
        for name in storage.list(MANIFEST_SUFFIX).await? {
            has_manifest.insert(name.trim_end_matches(MANIFEST_SUFFIX).to_string());
            let bytes = match storage.get_small(&name).await {
                Ok(bytes) => bytes,
                // Deleted meanwhile (another replica): nothing to load.
                Err(e) if e.code == crate::error::ErrorCode::NotFound => continue,
                Err(e) => return Err(e),
            };
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) if m.record.id().is_some_and(|id| manifest_name(&id) == name) => {
                    catalog.put(m.record)
                }
                Ok(_) => {
                    tracing::warn!(manifest = %name, "manifest with an invalid backup id skipped")
                }
                Err(e) => {
                    tracing::warn!(manifest = %name, error = %e, "unreadable manifest skipped")
                }
            }
        }
        for name in storage.list("").await? {
            if name.ends_with(MANIFEST_SUFFIX) {
                continue;
            }
            // backup_<time>.json, .json.gz, .json.zst, ... .enc
            let stem = name.split(".json").next().unwrap_or_default();
            // A fresh one may be a backup another replica is finishing right now.
            let stale = storage
                .age(&name)
                .await
                .is_none_or(|age| age >= crate::storage::STALE_AFTER);
            if BackupId::parse(stem).is_ok() && !has_manifest.contains(stem) && stale {
                tracing::warn!(object = %name, "removing backup data without a manifest (interrupted backup)");
                if let Err(e) = storage.delete(&name).await {
                    tracing::warn!(object = %name, error = %e.message, "could not remove leftover");
                }
            }
        }
        tracing::info!(backups = catalog.len(), "catalog loaded from storage");
        Ok(catalog)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: &str) -> bool {
        self.read().contains_key(id)
    }

    pub fn put(&self, record: BackupRecord) {
        self.write().insert(
            record.backup_id.clone(),
            Entry {
                record,
                progress: None,
            },
        );
    }

    /// Adds a running job whose progress is read live.
    pub fn put_running(&self, record: BackupRecord, progress: Arc<Mutex<Progress>>) {
        self.write().insert(
            record.backup_id.clone(),
            Entry {
                record,
                progress: Some(progress),
            },
        );
    }

    pub fn get(&self, id: &str) -> Option<BackupRecord> {
        self.read().get(id).map(snapshot)
    }

    pub fn remove(&self, id: &str) -> Option<BackupRecord> {
        self.write().remove(id).map(|e| e.record)
    }

    /// Newest first, strictly older than `before` when given; `true` when more follow.
    pub fn page(&self, before: Option<&str>, size: usize) -> (Vec<BackupRecord>, bool) {
        let entries = self.read();
        let mut iter: Box<dyn Iterator<Item = &Entry>> = match before {
            Some(before) => Box::new(
                entries
                    .range::<str, _>((Bound::Unbounded, Bound::Excluded(before)))
                    .rev()
                    .map(|(_, e)| e),
            ),
            None => Box::new(entries.values().rev()),
        };
        let page: Vec<BackupRecord> = iter.by_ref().take(size).map(snapshot).collect();
        let more = iter.next().is_some();
        (page, more)
    }

    /// Merges what storage holds now: manifests written by other replicas
    /// sharing the storage are added, records whose manifest another replica
    /// deleted are dropped. Jobs running here are kept. Unlike `load`, this
    /// never deletes anything in storage (another replica may be mid-write).
    /// Returns (added, removed).
    pub async fn refresh(&self, storage: &dyn Storage) -> Result<(usize, usize)> {
        // Only records already finished before listing may be dropped: a job
        // finishing during the listing has a manifest the listing may miss.
        let finished: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, e)| e.progress.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let names = storage.list(MANIFEST_SUFFIX).await?;
        let mut present = std::collections::HashSet::with_capacity(names.len());
        let mut added = 0;
        for name in &names {
            let Some(stem) = name.strip_suffix(MANIFEST_SUFFIX) else {
                continue;
            };
            present.insert(stem.to_string());
            if BackupId::parse(stem).is_err() || self.contains(stem) {
                continue;
            }
            let bytes = match storage.get_small(name).await {
                Ok(bytes) => bytes,
                // Deleted between listing and reading.
                Err(e) if e.code == crate::error::ErrorCode::NotFound => continue,
                Err(e) => return Err(e),
            };
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) if m.record.backup_id == stem => {
                    let mut entries = self.write();
                    // A local job may have registered the id meanwhile: it wins.
                    if !entries.contains_key(stem) {
                        entries.insert(
                            stem.to_string(),
                            Entry {
                                record: m.record,
                                progress: None,
                            },
                        );
                        added += 1;
                    }
                }
                Ok(_) => tracing::warn!(manifest = %name, "manifest naming another backup skipped"),
                Err(e) => {
                    tracing::warn!(manifest = %name, error = %e, "unreadable manifest skipped")
                }
            }
        }
        let mut removed = 0;
        {
            let mut entries = self.write();
            for id in finished {
                if !present.contains(&id) && entries.get(&id).is_some_and(|e| e.progress.is_none())
                {
                    entries.remove(&id);
                    removed += 1;
                }
            }
        }
        if added > 0 || removed > 0 {
            tracing::debug!(added, removed, "catalog refreshed from storage");
        }
        Ok((added, removed))
    }

    /// Every record, newest first.
    pub fn all(&self) -> Vec<BackupRecord> {
        self.read().values().rev().map(snapshot).collect()
    }

    /// The newest record of a scheduled backup.
    pub fn last_scheduled(&self) -> Option<BackupRecord> {
        self.read()
            .values()
            .rev()
            .find(|e| e.record.trigger == super::record::Trigger::Scheduled)
            .map(snapshot)
    }

    /// The record of the scheduled backup taken for `slot`, if any.
    pub fn for_slot(&self, slot: chrono::DateTime<chrono::Utc>) -> Option<BackupRecord> {
        self.read()
            .values()
            .rev()
            .find(|e| e.record.scheduled_for == Some(slot))
            .map(snapshot)
    }

    pub fn stats(&self) -> Stats {
        let entries = self.read();
        let completed = entries
            .values()
            .filter(|e| e.record.status == BackupStatus::Completed);
        Stats {
            total: entries.len() as u64,
            completed: completed.clone().count() as u64,
            completed_bytes: completed.map(|e| e.record.size).sum(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn snapshot(entry: &Entry) -> BackupRecord {
    let mut record = entry.record.clone();
    if let Some(Ok(p)) = entry.progress.as_ref().map(|p| p.lock()) {
        record.progress = p.clone();
    }
    record
}
