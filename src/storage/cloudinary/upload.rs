//! The streaming writer. Only one chunk is ever buffered (20 MB by default),
//! never the whole backup.
//!
//! An object is written as one or more raw assets, each at most the per-asset
//! cap (`min(part_size, media_limits.raw_max_size_bytes)`):
//! - asset 1 is `<folder>/N` itself, assets 2.. are `<folder>/N.part0002`, ...
//!   (part 1 keeps the object's own name so that an object which turns out to
//!   fit needs neither a rename nor an index, whatever its size);
//! - an asset no larger than one chunk is one signed upload; a bigger one is a
//!   chunked upload (`X-Unique-Upload-Id`, `Content-Range`), every chunk but
//!   the last exactly `chunk_size` (at least 5 MB), the last sent only after
//!   all others were answered. The total is unknown until the last chunk, so
//!   earlier chunks say `bytes a-b/-1` (what Cloudinary's SDKs are reported
//!   to send for streams of unknown length; not confirmed in Cloudinary's
//!   own documentation), and the last one names the total;
//! - an object of more than one asset gets an index asset `N.parts.json`
//!   (every part's public_id, bytes and SHA-256, and the whole object's size
//!   and SHA-256), uploaded before `finish` returns, once a fresh listing of
//!   `<folder>/N*` (one Admin API call per 500 assets) showed that every
//!   part is still there.
//!
//! A failure, `abort` or drop destroys every asset already uploaded.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Inner;
use super::client::{ChunkRange, Resource, UploadOutcome};
use crate::error::{Error, Result};
use crate::storage::{ObjectWriter, StoredObject, StoredPart};

pub const INDEX_SUFFIX: &str = ".parts.json";
const INDEX_VERSION: u32 = 1;

/// The asset name of part `number` (1-based) of object `name`.
pub fn part_name(name: &str, number: usize) -> String {
    if number <= 1 {
        name.to_string()
    } else {
        format!("{name}.part{number:04}")
    }
}

/// `Some(object)` when `name` is a part asset `object.partNNNN` (NNNN >= 2).
pub fn part_of(name: &str) -> Option<&str> {
    let (object, number) = name.rsplit_once(".part")?;
    (number.len() >= 4 && number.bytes().all(|b| b.is_ascii_digit()) && !object.is_empty())
        .then_some(object)
}

pub fn index_name(name: &str) -> String {
    format!("{name}{INDEX_SUFFIX}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexPart {
    pub name: String,
    pub public_id: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `N.parts.json`: how a multi-asset object is put back together.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartsIndex {
    pub index_version: u32,
    pub object: String,
    pub size: u64,
    pub sha256: String,
    pub parts: Vec<IndexPart>,
}

impl PartsIndex {
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Self> {
        let index: PartsIndex = serde_json::from_slice(bytes)
            .map_err(|e| Error::internal(format!("unreadable parts index of {name}: {e}")))?;
        let sum: u64 = index.parts.iter().map(|p| p.bytes).sum();
        if index.object != name || index.parts.is_empty() || sum != index.size {
            return Err(Error::internal(format!(
                "the parts index of {name} is inconsistent"
            )));
        }
        Ok(index)
    }
}

pub struct CloudinaryWriter {
    inner: Arc<Inner>,
    name: String,
    /// Largest asset.
    cap: u64,
    chunk: u64,
    /// Bytes of the current asset not sent yet.
    buf: BytesMut,
    /// Bytes of the current asset already sent as chunks.
    sent: u64,
    /// The chunked upload of the current asset, once its first chunk went.
    upload_id: Option<String>,
    part_hasher: Sha256,
    total_hasher: Sha256,
    total: u64,
    parts: Vec<(IndexPart, String)>,
    /// Assets that exist and must go if this write does not finish.
    uploaded: Vec<String>,
    open: bool,
}

impl CloudinaryWriter {
    pub fn new(inner: Arc<Inner>, name: &str, cap: u64) -> Self {
        let chunk = inner.client.config.chunk_size;
        Self {
            inner,
            name: name.to_string(),
            cap: cap.max(1),
            chunk,
            buf: BytesMut::new(),
            sent: 0,
            upload_id: None,
            part_hasher: Sha256::new(),
            total_hasher: Sha256::new(),
            total: 0,
            parts: Vec::new(),
            uploaded: Vec::new(),
            open: true,
        }
    }

    fn current_part(&self) -> String {
        part_name(&self.name, self.parts.len() + 1)
    }

    async fn write_inner(&mut self, mut data: Bytes) -> Result<()> {
        while !data.is_empty() {
            let used = self.sent + self.buf.len() as u64;
            if used >= self.cap {
                // The asset is full and more bytes follow: it is complete.
                self.close_asset().await?;
                continue;
            }
            // Never buffer more than one chunk and a byte, however big the write.
            let room = (self.chunk as usize + 1)
                .saturating_sub(self.buf.len())
                .max(1);
            let take = ((self.cap - used) as usize).min(data.len()).min(room);
            let piece = data.split_to(take);
            self.part_hasher.update(&piece);
            self.total_hasher.update(&piece);
            self.total += take as u64;
            self.buf.extend_from_slice(&piece);
            while self.buf.len() as u64 > self.chunk {
                // More than a chunk buffered, so the first chunk is not the last.
                self.send_chunk().await?;
            }
        }
        Ok(())
    }

    async fn send_chunk(&mut self) -> Result<()> {
        let bytes = self.buf.split_to(self.chunk as usize).freeze();
        let len = bytes.len() as u64;
        let upload_id = self
            .upload_id
            .get_or_insert_with(|| format!("{:032x}", rand::random::<u128>()))
            .clone();
        let range = ChunkRange {
            upload_id,
            first: self.sent,
            last: self.sent + len - 1,
            total: None,
        };
        let public_id = self.inner.client.config.public_id(&self.current_part());
        match self
            .inner
            .client
            .upload(&public_id, bytes, Some(&range))
            .await?
        {
            UploadOutcome::Partial => {
                self.sent += len;
                Ok(())
            }
            UploadOutcome::Done(_) => Err(Error::internal(format!(
                "uploading {public_id}: Cloudinary finished the asset before its last chunk"
            ))),
        }
    }

    /// Sends what is left of the current asset (a whole upload, or the last chunk).
    async fn close_asset(&mut self) -> Result<()> {
        let name = self.current_part();
        let public_id = self.inner.client.config.public_id(&name);
        let data = self.buf.split().freeze();
        let size = self.sent + data.len() as u64;
        let outcome = match self.upload_id.take() {
            Some(upload_id) => {
                if data.is_empty() {
                    return Err(Error::internal(format!(
                        "uploading {public_id}: no bytes left for the last chunk"
                    )));
                }
                let range = ChunkRange {
                    upload_id,
                    first: self.sent,
                    last: size - 1,
                    total: Some(size),
                };
                self.inner
                    .client
                    .upload(&public_id, data, Some(&range))
                    .await?
            }
            None => self.inner.client.upload(&public_id, data, None).await?,
        };
        let resource = match outcome {
            UploadOutcome::Done(resource) => resource,
            UploadOutcome::Partial => {
                return Err(Error::internal(format!(
                    "uploading {public_id}: Cloudinary did not finish the asset after its last chunk"
                )));
            }
        };
        self.uploaded.push(name.clone());
        self.inner.remember(&name, &resource).await;
        if resource.bytes != size {
            return Err(Error::internal(format!(
                "uploading {public_id}: Cloudinary stored {} bytes of {size}",
                resource.bytes
            )));
        }
        let sha256 = hex::encode(std::mem::take(&mut self.part_hasher).finalize());
        self.parts.push((
            IndexPart {
                name,
                public_id,
                bytes: size,
                sha256,
            },
            resource.secure_url,
        ));
        self.sent = 0;
        Ok(())
    }

    async fn finish_inner(&mut self) -> Result<StoredObject> {
        self.close_asset().await?;
        if self.parts.len() == 1 {
            let url = self.parts[0].1.clone();
            return Ok(StoredObject {
                url,
                parts: Vec::new(),
            });
        }
        self.confirm_parts().await?;
        let index = PartsIndex {
            index_version: INDEX_VERSION,
            object: self.name.clone(),
            size: self.total,
            sha256: hex::encode(std::mem::take(&mut self.total_hasher).finalize()),
            parts: self.parts.iter().map(|(p, _)| p.clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&index)
            .map_err(|e| Error::internal(format!("encoding the parts index: {e}")))?;
        let name = index_name(&self.name);
        let public_id = self.inner.client.config.public_id(&name);
        let resource: Resource = match self
            .inner
            .client
            .upload(&public_id, Bytes::from(bytes), None)
            .await?
        {
            UploadOutcome::Done(resource) => resource,
            UploadOutcome::Partial => {
                return Err(Error::internal(format!(
                    "uploading {public_id}: unexpected partial answer"
                )));
            }
        };
        self.uploaded.push(name.clone());
        self.inner.remember(&name, &resource).await;
        Ok(StoredObject {
            // The index is what stands for the whole object.
            url: resource.secure_url,
            parts: index
                .parts
                .into_iter()
                .map(|p| StoredPart {
                    name: p.name,
                    bytes: p.bytes,
                    sha256: p.sha256,
                })
                .collect(),
        })
    }

    /// Before the index makes the object whole: every part is still on
    /// Cloudinary (asked of Cloudinary, not the cache), so an
    /// index never names a part that is gone (e.g. destroyed by another
    /// replica's start-up cleaning).
    async fn confirm_parts(&self) -> Result<()> {
        let prefix = self.inner.client.config.public_id(&self.name);
        let listed = self.inner.fetch_prefix(&prefix).await.map_err(|e| {
            e.context(&format!(
                "checking the uploaded parts of {} before writing its index",
                self.name
            ))
        })?;
        if let Some((part, _)) = self
            .parts
            .iter()
            .find(|(p, _)| !listed.contains_key(&p.name))
        {
            return Err(Error::internal(format!(
                "{} vanished from Cloudinary during the upload; the backup is not stored",
                part.public_id
            )));
        }
        Ok(())
    }

    /// Destroys every asset this write uploaded.
    async fn clean_up(&mut self) {
        let names = std::mem::take(&mut self.uploaded);
        destroy_all(&self.inner, names).await;
    }
}

async fn destroy_all(inner: &Inner, names: Vec<String>) {
    for name in names {
        let public_id = inner.client.config.public_id(&name);
        match inner.client.destroy(&public_id).await {
            Ok(_) => inner.forget(&name).await,
            Err(e) => tracing::warn!(
                asset = %public_id,
                error = %e.message,
                "could not remove an asset of an unfinished upload; it is removed by the next start-up cleaning"
            ),
        }
    }
}

#[async_trait]
impl ObjectWriter for CloudinaryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if !self.open {
            return Err(Error::internal("write after finish or failure"));
        }
        if let Err(e) = self.write_inner(chunk).await {
            self.open = false;
            self.clean_up().await;
            return Err(e);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<StoredObject> {
        if !self.open {
            return Err(Error::internal("finish after finish or failure"));
        }
        self.open = false;
        match self.finish_inner().await {
            Ok(stored) => {
                self.uploaded.clear();
                Ok(stored)
            }
            Err(e) => {
                self.clean_up().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        self.open = false;
        self.clean_up().await;
    }
}

impl Drop for CloudinaryWriter {
    fn drop(&mut self) {
        // Dropped unfinished (a cancelled job): remove what was uploaded.
        if self.uploaded.is_empty() {
            return;
        }
        let names = std::mem::take(&mut self.uploaded);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let inner = self.inner.clone();
                runtime.spawn(async move { destroy_all(&inner, names).await });
            }
            Err(_) => tracing::warn!(
                assets = names.len(),
                "unfinished Cloudinary upload dropped outside a runtime; start-up cleaning removes its assets"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names() {
        assert_eq!(part_name("b.json", 1), "b.json");
        assert_eq!(part_name("b.json", 2), "b.json.part0002");
        assert_eq!(part_of("b.json.part0002"), Some("b.json"));
        assert_eq!(part_of("b.json.part12345"), Some("b.json"));
        assert_eq!(part_of("b.json"), None);
        assert_eq!(part_of("b.json.partial"), None);
        assert_eq!(index_name("b.json"), "b.json.parts.json");
    }
}
