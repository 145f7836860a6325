//! Gets documents back out of a backup file into a directory: each one is
//! written to a temp file, its sha256 checked, then renamed to a safe name
//! (`<first 16 hex of sha256>-<sanitized basename>`, never a path taken from
//! the URL); `index.json` maps each URL to its file.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::format::reader::{BackupReader, DocumentEvent, Event};
use crate::storage::ByteStream;

pub const INDEX_FILE: &str = "index.json";

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractReport {
    pub backup_id: String,
    /// Whether the backup holds documents at all.
    pub included: bool,
    pub note: String,
    pub documents: u64,
    pub bytes: u64,
    pub missing: u64,
    pub dir: String,
}

/// The file name a document gets: never a path from the URL.
pub fn file_name(url: &str, sha256: &str) -> String {
    let base = url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
        })
        .map(|seg| {
            percent_decode(&seg)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .unwrap_or_default();
    let base = base.trim_start_matches('.');
    let base: String = base.chars().take(80).collect();
    let base = if base.is_empty() { "document" } else { &base };
    let prefix: String = sha256.chars().take(16).collect();
    format!("{prefix}-{base}")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A directory a restore may write documents into: `requested` relative to
/// `root`, or absolute inside it; no `..`, and still inside `root` once
/// symlinks are resolved. Created when missing if `create` (not in a dry
/// run, which only checks).
pub fn restore_dir(root: Option<&Path>, requested: &str, create: bool) -> Result<PathBuf> {
    let root = root.ok_or_else(|| {
        Error::precondition(
            "documents_dir needs DOCUMENT_RESTORE_ROOT to be configured on the server; no documents were written",
        )
    })?;
    let path = Path::new(requested);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::invalid("documents_dir must not contain '..'"));
    }
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    let outside = || {
        Error::invalid(format!(
            "documents_dir {requested:?} is outside DOCUMENT_RESTORE_ROOT"
        ))
    };
    if !full.starts_with(root) {
        return Err(outside());
    }
    // The deepest part that exists must already resolve inside the root, so
    // nothing is created through a symlink that leads out.
    let mut existing = full.as_path();
    while !existing.exists() {
        existing = existing.parent().ok_or_else(outside)?;
    }
    let real = std::fs::canonicalize(existing)
        .map_err(|e| Error::storage_io(&format!("resolving documents_dir {requested:?}"), &e))?;
    if !real.starts_with(root) {
        return Err(outside());
    }
    if !create {
        return Ok(if existing == full.as_path() {
            real
        } else {
            full
        });
    }
    std::fs::create_dir_all(&full)
        .map_err(|e| Error::storage_io(&format!("creating documents_dir {requested:?}"), &e))?;
    let real = std::fs::canonicalize(&full)
        .map_err(|e| Error::storage_io(&format!("resolving documents_dir {requested:?}"), &e))?;
    if !real.starts_with(root) {
        return Err(outside());
    }
    Ok(real)
}

/// Streams the index as documents come, so memory does not grow with them.
struct Index {
    out: tokio::io::BufWriter<tokio::fs::File>,
    path: tempfile::TempPath,
    documents: u64,
    missing: u64,
    in_missing: bool,
}

impl Index {
    async fn create(dir: &Path, backup_id: &str) -> Result<Self> {
        let (file, path) = tempfile::Builder::new()
            .prefix(".index-")
            .tempfile_in(dir)
            .map_err(|e| Error::storage_io("creating index.json", &e))?
            .into_parts();
        let mut index = Self {
            out: tokio::io::BufWriter::new(tokio::fs::File::from_std(file)),
            path,
            documents: 0,
            missing: 0,
            in_missing: false,
        };
        let head = format!(
            "{{\"backupId\":{},\"documents\":{{",
            json(&backup_id.to_string())?
        );
        index.write(head.as_bytes()).await?;
        Ok(index)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| Error::storage_io("writing index.json", &e))
    }

    async fn document(&mut self, url: &str, entry: &IndexEntry<'_>) -> Result<()> {
        let sep = if self.documents == 0 { "\n" } else { ",\n" };
        let line = format!("{sep}{}:{}", json(&url.to_string())?, json(entry)?);
        self.write(line.as_bytes()).await?;
        self.documents += 1;
        Ok(())
    }

    async fn missing(&mut self, doc: &super::MissingDocument) -> Result<()> {
        if !self.in_missing {
            self.write(b"\n},\"missingDocuments\":[").await?;
            self.in_missing = true;
        }
        let sep = if self.missing == 0 { "\n" } else { ",\n" };
        let line = format!("{sep}{}", json(doc)?);
        self.write(line.as_bytes()).await?;
        self.missing += 1;
        Ok(())
    }

    async fn finish(mut self, dir: &Path) -> Result<()> {
        if !self.in_missing {
            self.write(b"\n},\"missingDocuments\":[").await?;
        }
        self.write(b"\n]}\n").await?;
        self.out
            .flush()
            .await
            .map_err(|e| Error::storage_io("writing index.json", &e))?;
        self.out
            .get_ref()
            .sync_all()
            .await
            .map_err(|e| Error::storage_io("writing index.json", &e))?;
        self.path
            .persist(dir.join(INDEX_FILE))
            .map_err(|e| Error::storage_io("writing index.json", &e.error))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry<'a> {
    file: &'a str,
    size: u64,
    sha256: &'a str,
    content_type: &'a str,
}

fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal(format!("encoding JSON: {e}")))
}

/// The document being written.
struct Pending {
    url: String,
    content_type: String,
    out: tokio::io::BufWriter<tokio::fs::File>,
    path: tempfile::TempPath,
    hasher: Sha256,
    size: u64,
}

/// Writes every document of `plain` (the decoded JSON of a backup) into
/// `dir`. The reader checks each document's size and sha256 and the
/// trailer; a document is renamed into place only after its own hash was
/// checked here too. Callers that must not write anything from a damaged
/// file verify the whole file first (`restore::check_file`).
pub async fn extract_documents(plain: ByteStream, dir: &Path) -> Result<ExtractReport> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::storage_io(&format!("creating {}", dir.display()), &e))?;
    let mut reader = BackupReader::open(plain).await?;
    reader.emit_documents(true);
    let header = reader.header().clone();
    let mut report = ExtractReport {
        backup_id: header.backup_id.clone(),
        included: header.documents.included,
        note: header.documents.note.clone(),
        dir: dir.display().to_string(),
        ..Default::default()
    };
    let mut index = Index::create(dir, &header.backup_id).await?;
    let mut pending: Option<Pending> = None;
    while let Some(event) = reader.next().await? {
        let Event::Document(event) = event else {
            continue;
        };
        match event {
            DocumentEvent::Start { url, content_type } => {
                let (file, path) = tempfile::Builder::new()
                    .prefix(".document-")
                    .tempfile_in(dir)
                    .map_err(|e| Error::storage_io("creating a document file", &e))?
                    .into_parts();
                pending = Some(Pending {
                    url: url.to_string(),
                    content_type: content_type.to_string(),
                    out: tokio::io::BufWriter::with_capacity(
                        256 * 1024,
                        tokio::fs::File::from_std(file),
                    ),
                    path,
                    hasher: Sha256::new(),
                    size: 0,
                });
            }
            DocumentEvent::Chunk(bytes) => {
                let doc = pending
                    .as_mut()
                    .ok_or_else(|| Error::internal("document chunk without a document"))?;
                doc.hasher.update(bytes);
                doc.size += bytes.len() as u64;
                doc.out
                    .write_all(bytes)
                    .await
                    .map_err(|e| Error::storage_io("writing a document", &e))?;
            }
            DocumentEvent::End { size, sha256 } => {
                let mut doc = pending
                    .take()
                    .ok_or_else(|| Error::internal("document end without a document"))?;
                let digest = hex::encode(doc.hasher.finalize());
                if digest != sha256 || doc.size != size {
                    return Err(crate::schema::corrupt(format!(
                        "document {} does not match its sha256",
                        super::redact_document_url(&doc.url)
                    )));
                }
                doc.out
                    .flush()
                    .await
                    .map_err(|e| Error::storage_io("writing a document", &e))?;
                doc.out
                    .get_ref()
                    .sync_all()
                    .await
                    .map_err(|e| Error::storage_io("writing a document", &e))?;
                let name = file_name(&doc.url, &digest);
                doc.path
                    .persist(dir.join(&name))
                    .map_err(|e| Error::storage_io("writing a document", &e.error))?;
                index
                    .document(
                        &doc.url,
                        &IndexEntry {
                            file: &name,
                            size,
                            sha256: &digest,
                            content_type: &doc.content_type,
                        },
                    )
                    .await?;
                report.documents += 1;
                report.bytes += size;
            }
            DocumentEvent::Missing(doc) => {
                index.missing(doc).await?;
                report.missing += 1;
            }
        }
    }
    index.finish(dir).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe() {
        let sha = "0123456789abcdef0123";
        assert_eq!(
            file_name("https://h/raw/upload/v1/loan%20contract.pdf?x=1", sha),
            "0123456789abcdef-loan_contract.pdf"
        );
        assert_eq!(
            file_name("https://h/a/..%2F..%2Fetc%2Fpasswd", sha),
            "0123456789abcdef-_.._etc_passwd"
        );
        assert_eq!(file_name("https://h/", sha), "0123456789abcdef-document");
        assert_eq!(
            file_name("file:///x/.hidden", sha),
            "0123456789abcdef-hidden"
        );
        assert!(!file_name("https://h/a/%2e%2e", sha).contains('/'));
    }

    #[test]
    fn restore_dirs_stay_under_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        assert!(
            restore_dir(Some(&root), "restore-1", true)
                .unwrap()
                .starts_with(&root)
        );
        assert!(root.join("restore-1").is_dir());
        let inside = root.join("abs");
        assert!(restore_dir(Some(&root), inside.to_str().unwrap(), true).is_ok());
        std::os::unix::fs::symlink("/tmp", root.join("link")).unwrap();
        for create in [true, false] {
            assert!(restore_dir(Some(&root), "../x", create).is_err());
            assert!(restore_dir(Some(&root), "/etc", create).is_err());
            assert!(restore_dir(Some(&root), "link/x", create).is_err());
            assert!(restore_dir(None, "x", create).is_err());
        }
        // A dry run checks and creates nothing.
        let dry = restore_dir(Some(&root), "dry/run", false).unwrap();
        assert_eq!(dry, root.join("dry/run"));
        assert!(!root.join("dry").exists());
        assert_eq!(
            restore_dir(Some(&root), "restore-1", false).unwrap(),
            root.join("restore-1")
        );
    }
}
