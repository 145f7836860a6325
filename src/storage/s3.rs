//! S3-compatible storage (AWS, MinIO, R2, Ceph, ...) through `object_store`.
//! Uploads stream as multipart in 8 MiB parts; an object becomes visible only
//! when its upload completes, so a failed backup leaves nothing behind.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;

use super::{ByteStream, ObjectWriter, Storage, StoredObject};
use crate::error::{Error, ErrorCode, Result};

/// Bytes buffered before a multipart part is sent (S3's minimum part is 5 MiB).
const PART_BYTES: usize = 8 * 1024 * 1024;

pub struct S3Storage {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
}

fn s3_error(what: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::not_found(format!("{what}: not found")),
        other => Error::internal(format!("{what}: object storage error: {other}")),
    }
}

impl S3Storage {
    /// `s3://bucket/prefix`; credentials, region and endpoint from the
    /// standard AWS_* variables (AWS_ENDPOINT_URL for MinIO and others).
    pub fn open(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::invalid("S3 storage URLs start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(format!(
                "STORAGE_URL {url:?} names no bucket"
            )));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false)
                .with_endpoint(endpoint);
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        let store = builder
            .build()
            .map_err(|e| Error::invalid(format!("S3 storage configuration: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    fn path(&self, name: &str) -> Result<Path> {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
            return Err(Error::invalid(format!("invalid object name {name:?}")));
        }
        Ok(if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        })
    }

    fn url(&self, path: &Path) -> String {
        format!("s3://{}/{}", self.bucket, path)
    }
}

struct S3Writer {
    upload: Option<BufWriter>,
    url: String,
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| Error::internal("write after finish"))?;
        upload
            .write_all(&chunk)
            .await
            .map_err(|e| Error::internal(format!("uploading to object storage: {e}")))
    }

    async fn finish(mut self: Box<Self>) -> Result<StoredObject> {
        let mut upload = self
            .upload
            .take()
            .ok_or_else(|| Error::internal("finish called twice"))?;
        if let Err(e) = upload.shutdown().await {
            let _ = upload.abort().await;
            return Err(Error::internal(format!("completing the upload: {e}")));
        }
        Ok(StoredObject {
            url: self.url.clone(),
            ..Default::default()
        })
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(mut upload) = self.upload.take() {
            let _ = upload.abort().await;
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn check(&self) -> Result<()> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let probe = self.store.list(prefix.as_ref()).next().await;
        match probe {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(Error::unavailable(format!(
                "object storage unreachable: {e}"
            ))),
        }
    }

    async fn probe(&self) -> Result<()> {
        let nonce: u64 = rand::random();
        let path = self.path(&format!("readiness-probe-{nonce:016x}"))?;
        let unwritable = |e: object_store::Error| {
            Error::unavailable(format!("object storage is not writable: {e}"))
        };
        self.store
            .put(&path, PutPayload::from_static(b"ok"))
            .await
            .map_err(unwritable)?;
        self.store.delete(&path).await.map_err(unwritable)
    }

    async fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path(name)?;
        let url = self.url(&path);
        Ok(Box::new(S3Writer {
            upload: Some(BufWriter::with_capacity(
                self.store.clone(),
                path,
                PART_BYTES,
            )),
            url,
        }))
    }

    async fn read(&self, name: &str, offset: u64) -> Result<ByteStream> {
        let path = self.path(name)?;
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..Default::default()
        };
        let result = self
            .store
            .get_opts(&path, options)
            .await
            .map_err(|e| s3_error(&format!("reading {name}"), e))?;
        let stream = result
            .into_stream()
            .map_err(|e| Error::internal(format!("reading from object storage: {e}")));
        Ok(Box::pin(stream))
    }

    async fn put_small(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(name)?;
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| s3_error(&format!("writing {name}"), e))
    }

    async fn get_small(&self, name: &str) -> Result<Bytes> {
        let path = self.path(name)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| s3_error(&format!("reading {name}"), e))?;
        result
            .bytes()
            .await
            .map_err(|e| s3_error(&format!("reading {name}"), e))
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        // S3 answers a delete of a missing key with success; ask first so callers get NotFound.
        match self.store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::new(ErrorCode::NotFound, format!("{name} not found")));
            }
            Err(e) => return Err(s3_error(&format!("deleting {name}"), e)),
            Ok(_) => {}
        }
        self.store
            .delete(&path)
            .await
            .map_err(|e| s3_error(&format!("deleting {name}"), e))
    }

    async fn list(&self, suffix: &str) -> Result<Vec<String>> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        // Only this prefix's own objects, not those of nested prefixes.
        let listing = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| s3_error("listing objects", e))?;
        let mut names: Vec<String> = listing
            .objects
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .filter(|n| n.ends_with(suffix) && !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn age(&self, name: &str) -> Option<std::time::Duration> {
        let path = self.path(name).ok()?;
        let meta = self.store.head(&path).await.ok()?;
        (chrono::Utc::now() - meta.last_modified).to_std().ok()
    }

    async fn clean_incomplete(&self) -> Result<usize> {
        // Incomplete multipart uploads are invisible and never listed; an
        // abort on failure removes ours, and a bucket lifecycle rule should
        // expire any left by a crash.
        Ok(0)
    }
}
