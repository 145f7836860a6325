//! Where backups live. Every backend implements `Storage`; the catalog is
//! rebuilt from what storage holds (data objects and manifests beside them).

pub mod cloudinary;
pub mod local;
pub mod s3;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::error::{Error, Result};

/// Leftovers younger than this may belong to a backup another replica is
/// still writing, so start-up cleaning leaves them alone.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// A stream of an object's bytes, read lazily with backpressure.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// An object being written. Nothing is visible under its name until
/// `finish` succeeds; `abort` (or dropping it) leaves nothing behind.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Makes the object durable and visible under its final name.
    async fn finish(self: Box<Self>) -> Result<StoredObject>;
    async fn abort(self: Box<Self>);
}

/// What a finished write produced.
#[derive(Debug, Clone, Default)]
pub struct StoredObject {
    /// A URL of the object where the backend has one (e.g. Cloudinary).
    pub url: String,
    /// The separate pieces the backend stored the object as, in order, when
    /// it had to split it (Cloudinary's per-asset size cap); empty otherwise.
    pub parts: Vec<StoredPart>,
}

/// One piece of an object stored in several.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPart {
    /// The piece's own object name in storage.
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[async_trait]
pub trait Storage: Send + Sync {
    /// Human-readable location, secrets masked.
    fn describe(&self) -> String;
    /// Fails when the storage cannot be reached or written.
    async fn check(&self) -> Result<()>;
    /// Readiness: proves the backend takes writes by writing and deleting a
    /// small probe object (permission bits can lie, e.g. to root or on a
    /// read-only mount). Callers cache the answer; see `api::readiness`.
    async fn probe(&self) -> Result<()>;
    /// Starts writing an object.
    async fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Reads an object from `offset` to the end.
    async fn read(&self, name: &str, offset: u64) -> Result<ByteStream>;
    /// Writes a small object (a manifest) atomically, replacing any old one.
    async fn put_small(&self, name: &str, bytes: Bytes) -> Result<()>;
    /// Reads a small object whole.
    async fn get_small(&self, name: &str) -> Result<Bytes>;
    /// Removes an object; NotFound when there is none.
    async fn delete(&self, name: &str) -> Result<()>;
    /// Names of all objects with the given suffix.
    async fn list(&self, suffix: &str) -> Result<Vec<String>>;
    /// Removes leftovers of interrupted writes untouched for `STALE_AFTER`
    /// (another replica may be writing the fresh ones); returns how many.
    async fn clean_incomplete(&self) -> Result<usize>;
    /// Time since the object was last written, when the backend knows it.
    async fn age(&self, name: &str) -> Option<std::time::Duration>;
}

/// An in-memory object for unit tests: every written byte lands in the
/// shared buffer.
#[cfg(test)]
pub struct MemoryWriter(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
#[async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.0
            .lock()
            .map_err(|_| Error::internal("poisoned test buffer"))?
            .extend_from_slice(&chunk);
        Ok(())
    }
    async fn finish(self: Box<Self>) -> Result<StoredObject> {
        Ok(StoredObject::default())
    }
    async fn abort(self: Box<Self>) {}
}

/// Opens the backend a `STORAGE_URL` names: a plain path, `file:///abs`,
/// `s3://bucket/prefix` or `cloudinary://key:secret@cloud?options`, with
/// Cloudinary's API at `cloudinary_api_base` (`CLOUDINARY_API_BASE`).
pub async fn open(url: &str, cloudinary_api_base: &str) -> Result<Arc<dyn Storage>> {
    if url.starts_with("cloudinary://") {
        return Ok(Arc::new(cloudinary::CloudinaryStorage::open(
            url,
            cloudinary_api_base,
        )?));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(Error::invalid(format!(
                "STORAGE_URL {url:?}: file:// needs an absolute path (file:///abs/path)"
            )));
        }
        return Ok(Arc::new(local::LocalStorage::open(path).await?));
    }
    if url.starts_with("s3://") {
        return Ok(Arc::new(s3::S3Storage::open(url)?));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(Error::invalid(format!(
            "STORAGE_URL scheme {scheme:?} is not supported by this build (use a path, file:///abs/path, s3://bucket/prefix or cloudinary://key:secret@cloud)"
        )));
    }
    Ok(Arc::new(local::LocalStorage::open(url).await?))
}
