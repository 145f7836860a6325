//! Local-filesystem storage: writes go to a hidden temporary name, are
//! fsynced, then renamed into place, so a crash never leaves a half file
//! under a real name.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::fs;
use tokio::io::AsyncSeekExt;
use tokio_util::io::ReaderStream;

use super::{ByteStream, ObjectWriter, Storage, StoredObject};
use crate::error::{Error, Result};

const TEMP_PREFIX: &str = ".incomplete-";
const READ_CHUNK: usize = 256 * 1024;

pub struct LocalStorage {
    dir: PathBuf,
}

impl LocalStorage {
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::storage_io(&format!("creating {}", dir.display()), &e))?;
        Ok(Self { dir })
    }

    /// Names come from validated backup ids; refuse anything path-like anyway.
    fn path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
            return Err(Error::invalid(format!("invalid object name {name:?}")));
        }
        Ok(self.dir.join(name))
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        let nonce: u64 = rand::random();
        self.dir.join(format!("{TEMP_PREFIX}{nonce:016x}-{name}"))
    }
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let d = fs::File::open(dir)
        .await
        .map_err(|e| Error::storage_io("opening storage directory", &e))?;
    d.sync_all()
        .await
        .map_err(|e| Error::storage_io("syncing storage directory", &e))
}

struct LocalWriter {
    file: Option<std::fs::File>,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Error::internal("write after finish"))?;
        // A page-cache write of one piece, written here: tokio's File would
        // copy it into its own buffer and hop to the blocking pool for every
        // piece, which measured as a few percent of a dump's CPU. The dump's
        // spill files are written the same way.
        std::io::Write::write_all(file, &chunk)
            .map_err(|e| Error::storage_io("writing backup file", &e))
    }

    async fn finish(mut self: Box<Self>) -> Result<StoredObject> {
        let result = async {
            let file = self
                .file
                .take()
                .ok_or_else(|| Error::internal("finish called twice"))?;
            // fsync waits for the disk: off the runtime.
            tokio::task::spawn_blocking(move || file.sync_all())
                .await
                .map_err(|e| Error::internal(format!("syncing backup file: {e}")))?
                .map_err(|e| Error::storage_io("syncing backup file", &e))?;
            fs::rename(&self.temp, &self.target)
                .await
                .map_err(|e| Error::storage_io("renaming backup file into place", &e))?;
            sync_dir(&self.dir).await
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&self.temp).await;
        }
        result.map(|_| StoredObject::default())
    }

    async fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = fs::remove_file(&self.temp).await;
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Dropped without finish (a cancelled job): remove the temporary file.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[async_trait]
impl Storage for LocalStorage {
    fn describe(&self) -> String {
        format!("local directory {}", self.dir.display())
    }

    async fn check(&self) -> Result<()> {
        let meta = fs::metadata(&self.dir).await.map_err(|e| {
            Error::unavailable(format!("storage directory {}: {e}", self.dir.display()))
        })?;
        if !meta.is_dir() || meta.permissions().readonly() {
            return Err(Error::unavailable(format!(
                "storage directory {} is not a writable directory",
                self.dir.display()
            )));
        }
        Ok(())
    }

    async fn probe(&self) -> Result<()> {
        // A temp name, so a crash between write and delete leaves something
        // `clean_incomplete` sweeps.
        let path = self.temp_path("readiness-probe");
        let unwritable = |e: std::io::Error| {
            Error::unavailable(format!(
                "storage directory {} is not writable: {e}",
                self.dir.display()
            ))
        };
        fs::write(&path, b"ok").await.map_err(unwritable)?;
        fs::remove_file(&path).await.map_err(unwritable)
    }

    async fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        let target = self.path(name)?;
        let temp = self.temp_path(name);
        let file = fs::File::create(&temp)
            .await
            .map_err(|e| Error::storage_io("creating backup file", &e))?
            .into_std()
            .await;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            temp,
            target,
            dir: self.dir.clone(),
        }))
    }

    async fn read(&self, name: &str, offset: u64) -> Result<ByteStream> {
        let path = self.path(name)?;
        let mut file = fs::File::open(&path)
            .await
            .map_err(|e| Error::storage_io(&format!("opening {name}"), &e))?;
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| Error::storage_io("seeking backup file", &e))?;
        }
        let stream = ReaderStream::with_capacity(file, READ_CHUNK)
            .map(|r| r.map_err(|e| Error::storage_io("reading backup file", &e)));
        Ok(Box::pin(stream))
    }

    async fn put_small(&self, name: &str, bytes: Bytes) -> Result<()> {
        let mut writer = self.create(name).await?;
        writer.write(bytes).await?;
        writer.finish().await.map(|_| ())
    }

    async fn get_small(&self, name: &str) -> Result<Bytes> {
        let path = self.path(name)?;
        fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| Error::storage_io(&format!("reading {name}"), &e))
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        fs::remove_file(&path)
            .await
            .map_err(|e| Error::storage_io(&format!("deleting {name}"), &e))
    }

    async fn list(&self, suffix: &str) -> Result<Vec<String>> {
        let mut entries = fs::read_dir(&self.dir)
            .await
            .map_err(|e| Error::storage_io("listing storage directory", &e))?;
        let mut names = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| Error::storage_io("listing storage directory", &e))?
        {
            if let Some(name) = entry.file_name().to_str()
                && name.ends_with(suffix)
                && !name.starts_with('.')
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn age(&self, name: &str) -> Option<std::time::Duration> {
        let path = self.path(name).ok()?;
        let modified = fs::metadata(&path).await.ok()?.modified().ok()?;
        Some(modified.elapsed().unwrap_or_default())
    }

    async fn clean_incomplete(&self) -> Result<usize> {
        let mut entries = fs::read_dir(&self.dir)
            .await
            .map_err(|e| Error::storage_io("listing storage directory", &e))?;
        let mut removed = 0;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| Error::storage_io("listing storage directory", &e))?
        {
            let is_temp = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TEMP_PREFIX));
            let stale = match entry.metadata().await.and_then(|m| m.modified()) {
                Ok(modified) => modified.elapsed().unwrap_or_default() >= super::STALE_AFTER,
                Err(_) => false,
            };
            if is_temp && stale && fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
