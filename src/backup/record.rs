//! The backup record: what the catalog holds and what the manifest beside each
//! backup file stores. Serialized with the documented JSON keys.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::id::BackupId;
pub use crate::schema::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackupStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    #[default]
    Manual,
    Scheduled,
}

/// One backup as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    pub backup_id: String,
    pub filename: String,
    /// Bytes of the stored file.
    pub size: u64,
    /// Storage URL of the file; empty where the storage has none.
    pub cloudinary_url: String,
    #[serde(with = "iso_time")]
    pub created_at: DateTime<Utc>,
    pub description: String,
    pub status: BackupStatus,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub sha256: String,
    pub include_documents: bool,
    #[serde(default)]
    pub row_counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub progress: Progress,
    #[serde(
        default,
        with = "iso_time_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub trigger: Trigger,
    #[serde(default)]
    pub source_engine: String,
    #[serde(default)]
    pub source_version: String,
    #[serde(default)]
    pub format_version: u32,
    /// Name of the data object in storage (the manifest sits beside it).
    #[serde(default)]
    pub object_name: String,
    /// Who asked for it (user id or email from the token).
    #[serde(default)]
    pub created_by: String,
    /// How the stored file is compressed.
    #[serde(default)]
    pub compression: crate::format::codec::Compression,
    /// The key the stored file is encrypted with; empty when it is not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub encryption_key_id: String,
    /// The schedule slot a scheduled backup was taken for (`trigger: scheduled`).
    #[serde(
        default,
        with = "iso_time_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// The pieces the storage split the file into (Cloudinary's per-asset
    /// cap), in order; absent when it is stored whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_parts: Vec<crate::storage::StoredPart>,
    /// Documents stored in the file (includeDocuments).
    #[serde(default)]
    pub document_count: u64,
    /// Their bytes, before base64.
    #[serde(default)]
    pub document_bytes: u64,
    /// Documents that could not be fetched (each is a warning).
    #[serde(default)]
    pub warning_count: u64,
    /// The missing documents with the reason, the first
    /// `documents::MAX_MISSING_IN_RECORD` of them (the file lists all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_documents: Vec<crate::documents::MissingDocument>,
}

impl BackupRecord {
    pub fn new(id: &BackupId, description: String, include_documents: bool) -> Self {
        let filename = format!("{id}.json");
        Self {
            backup_id: id.to_string(),
            object_name: filename.clone(),
            filename,
            size: 0,
            cloudinary_url: String::new(),
            created_at: id.created_at(),
            description,
            status: BackupStatus::Pending,
            error: String::new(),
            sha256: String::new(),
            include_documents,
            row_counts: BTreeMap::new(),
            progress: Progress::default(),
            completed_at: None,
            trigger: Trigger::Manual,
            source_engine: String::new(),
            source_version: String::new(),
            format_version: 0,
            created_by: String::new(),
            scheduled_for: None,
            compression: crate::format::codec::Compression::None,
            encryption_key_id: String::new(),
            storage_parts: Vec::new(),
            document_count: 0,
            document_bytes: 0,
            warning_count: 0,
            missing_documents: Vec::new(),
        }
    }

    pub fn encrypted(&self) -> bool {
        !self.encryption_key_id.is_empty()
    }

    /// The media type of the stored file.
    pub fn content_type(&self) -> &'static str {
        crate::format::codec::content_type(self.compression, !self.encryption_key_id.is_empty())
    }

    pub fn id(&self) -> Option<BackupId> {
        BackupId::parse(&self.backup_id).ok()
    }
}

/// ISO 8601 UTC with a `Z`, as the API page shows (`2026-03-11T12:00:00Z`),
/// keeping milliseconds when there are any.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

mod iso_time {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(t))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

mod iso_time_opt {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_time(t)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        raw.map(|raw| {
            DateTime::parse_from_rfc3339(&raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}
