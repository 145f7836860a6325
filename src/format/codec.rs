//! What happens to backup bytes between the format writer and storage:
//! optional compression (gzip, zstd), optional authenticated encryption
//! (XChaCha20-Poly1305 in the STREAM construction, 64 KiB segments), and the
//! SHA-256 of the stored bytes. Reading detects each layer by its magic bytes.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::error::{Error, Result};
use crate::schema::corrupt;
use crate::storage::{ByteStream, ObjectWriter, StoredObject};

/// First bytes of an encrypted backup, then a 16-character key id and a 19-byte nonce.
const MAGIC: &[u8; 6] = b"BSENC\x01";
const KEY_ID_LEN: usize = 16;
const NONCE_LEN: usize = 19;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;
/// Plaintext bytes per encrypted segment; each gains a 16-byte tag.
const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;
/// Measured on the loan benchmark (bench/compression.sh): level 1 is both
/// faster and no larger than 3 on data full of random ids.
const ZSTD_LEVEL: i32 = 1;
/// A 32 MiB window with long-distance matching lets zstd find foreign keys
/// that repeat ids written tables earlier: a third smaller on the loan
/// benchmark. Decoders accept windows up to 2^27 without being told, so
/// `zstd -d` still reads the files as they are.
const ZSTD_WINDOW_LOG: u32 = 25;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn parse(raw: &str) -> Result<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "gzip" | "gz" => Ok(Self::Gzip),
            "zstd" | "zst" => Ok(Self::Zstd),
            other => Err(Error::invalid(format!(
                "unknown compression {other:?}: use none, gzip or zstd"
            ))),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Gzip => ".gz",
            Self::Zstd => ".zst",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// The media type of a stored file.
pub fn content_type(compression: Compression, encrypted: bool) -> &'static str {
    match (encrypted, compression) {
        (true, _) => "application/octet-stream",
        (false, Compression::None) => "application/json",
        (false, Compression::Gzip) => "application/gzip",
        (false, Compression::Zstd) => "application/zstd",
    }
}

#[derive(Clone)]
pub struct EncryptionKey {
    pub id: String,
    key: [u8; 32],
}

impl EncryptionKey {
    /// A key from its base64 text (32 bytes once decoded).
    pub fn parse(raw: &str) -> Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| Error::invalid("encryption key is not valid base64"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::invalid("encryption key must be 32 bytes (base64 of 32 random bytes)")
        })?;
        let id = hex::encode(Sha256::digest(key))[..KEY_ID_LEN].to_string();
        Ok(Self { id, key })
    }
}

/// The key new backups are encrypted with, and every key that may open old ones.
#[derive(Clone, Default)]
pub struct Keyring {
    pub current: Option<EncryptionKey>,
    pub all: Vec<EncryptionKey>,
}

impl Keyring {
    pub fn new(current: Option<&str>, older: &[String]) -> Result<Self> {
        let current = current
            .filter(|k| !k.trim().is_empty())
            .map(EncryptionKey::parse)
            .transpose()?;
        let mut all: Vec<EncryptionKey> = current.iter().cloned().collect();
        for raw in older.iter().filter(|k| !k.trim().is_empty()) {
            all.push(EncryptionKey::parse(raw)?);
        }
        Ok(Self { current, all })
    }

    fn find(&self, id: &str) -> Option<&EncryptionKey> {
        self.all.iter().find(|k| k.id == id)
    }
}

/// How new backups are stored, and the keys that open old ones.
#[derive(Clone, Default)]
pub struct CodecSettings {
    pub default_compression: Compression,
    pub keys: Keyring,
}

/// The SHA-256 and size of what went into storage, known after finish.
pub type StoredDigest = Arc<Mutex<(String, u64)>>;

/// Hashes the bytes that reach storage.
pub struct HashingWriter {
    inner: Box<dyn ObjectWriter>,
    hasher: Sha256,
    bytes: u64,
    result: StoredDigest,
}

impl HashingWriter {
    pub fn new(inner: Box<dyn ObjectWriter>) -> (Self, StoredDigest) {
        let result = StoredDigest::default();
        (
            Self {
                inner,
                hasher: Sha256::new(),
                bytes: 0,
                result: result.clone(),
            },
            result,
        )
    }
}

#[async_trait]
impl ObjectWriter for HashingWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.hasher.update(&chunk);
        self.bytes += chunk.len() as u64;
        self.inner.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> Result<StoredObject> {
        let digest = hex::encode(self.hasher.finalize());
        if let Ok(mut r) = self.result.lock() {
            *r = (digest, self.bytes);
        }
        self.inner.finish().await
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await
    }
}

enum Compressor {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// Compresses on the writing thread (a separate thread was slower on 2 cores).
pub struct CompressingWriter {
    inner: Box<dyn ObjectWriter>,
    compressor: Option<Compressor>,
}

impl CompressingWriter {
    /// Wraps `inner`; with no compression, `inner` itself comes back.
    pub fn wrap(
        inner: Box<dyn ObjectWriter>,
        compression: Compression,
    ) -> Result<Box<dyn ObjectWriter>> {
        let compressor = match compression {
            Compression::None => return Ok(inner),
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::fast(),
            )),
            Compression::Zstd => Compressor::Zstd(zstd_encoder()?),
        };
        Ok(Box::new(Self {
            inner,
            compressor: Some(compressor),
        }))
    }
}

fn zstd_encoder() -> Result<zstd::stream::write::Encoder<'static, Vec<u8>>> {
    let start = |e: std::io::Error| Error::internal(format!("starting zstd: {e}"));
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(start)?;
    encoder.long_distance_matching(true).map_err(start)?;
    encoder.window_log(ZSTD_WINDOW_LOG).map_err(start)?;
    Ok(encoder)
}

fn compress_error(e: std::io::Error) -> Error {
    Error::internal(format!("compressing: {e}"))
}

#[async_trait]
impl ObjectWriter for CompressingWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let out = match self.compressor.as_mut() {
            Some(Compressor::Gzip(e)) => {
                e.write_all(&chunk).map_err(compress_error)?;
                std::mem::take(e.get_mut())
            }
            Some(Compressor::Zstd(e)) => {
                e.write_all(&chunk).map_err(compress_error)?;
                std::mem::take(e.get_mut())
            }
            None => return Err(Error::internal("write after finish")),
        };
        if out.is_empty() {
            return Ok(());
        }
        self.inner.write(Bytes::from(out)).await
    }

    async fn finish(mut self: Box<Self>) -> Result<StoredObject> {
        let tail = match self.compressor.take() {
            Some(Compressor::Gzip(e)) => e.finish().map_err(compress_error),
            Some(Compressor::Zstd(e)) => e.finish().map_err(compress_error),
            None => Err(Error::internal("finish called twice")),
        };
        let written = match tail {
            Ok(tail) if tail.is_empty() => Ok(()),
            Ok(tail) => self.inner.write(Bytes::from(tail)).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => self.inner.finish().await,
            Err(e) => {
                // Nothing half-written stays behind (an S3 multipart upload is aborted).
                self.inner.abort().await;
                Err(e)
            }
        }
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await
    }
}

/// Encrypts in 64 KiB segments; the last segment is marked as last, so a
/// truncated file fails to decrypt.
pub struct EncryptingWriter {
    inner: Box<dyn ObjectWriter>,
    encryptor: Option<EncryptorBE32<XChaCha20Poly1305>>,
    pending: Vec<u8>,
}

impl EncryptingWriter {
    /// Writes the header at once; fails (and the backup with it) if it cannot.
    pub async fn start(
        mut inner: Box<dyn ObjectWriter>,
        key: &EncryptionKey,
    ) -> Result<Box<dyn ObjectWriter>> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let cipher = XChaCha20Poly1305::new_from_slice(&key.key)
            .map_err(|_| Error::internal("encryption key has the wrong length"))?;
        let encryptor = EncryptorBE32::from_aead(cipher, (&nonce).into());
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(key.id.as_bytes());
        header.extend_from_slice(&nonce);
        inner.write(Bytes::from(header)).await?;
        Ok(Box::new(Self {
            inner,
            encryptor: Some(encryptor),
            pending: Vec::with_capacity(2 * SEGMENT),
        }))
    }
}

fn encrypt_error() -> Error {
    Error::internal("encryption failed; nothing was stored")
}

#[async_trait]
impl ObjectWriter for EncryptingWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.pending.extend_from_slice(&chunk);
        // Keep at least one byte back: only finish knows which segment is last.
        let mut sealed = Vec::new();
        while self.pending.len() > SEGMENT {
            let encryptor = self.encryptor.as_mut().ok_or_else(encrypt_error)?;
            let segment = encryptor
                .encrypt_next(&self.pending[..SEGMENT])
                .map_err(|_| encrypt_error())?;
            sealed.extend_from_slice(&segment);
            self.pending.drain(..SEGMENT);
        }
        if sealed.is_empty() {
            return Ok(());
        }
        self.inner.write(Bytes::from(sealed)).await
    }

    async fn finish(mut self: Box<Self>) -> Result<StoredObject> {
        let last = self
            .encryptor
            .take()
            .ok_or_else(encrypt_error)
            .and_then(|e| {
                e.encrypt_last(self.pending.as_slice())
                    .map_err(|_| encrypt_error())
            });
        let written = match last {
            Ok(last) => self.inner.write(Bytes::from(last)).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => self.inner.finish().await,
            Err(e) => {
                self.inner.abort().await;
                Err(e)
            }
        }
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await
    }
}

/// Reads at least `want` bytes (or to the end) so the magic can be checked.
async fn peek(mut stream: ByteStream, want: usize) -> Result<(BytesMut, ByteStream, bool)> {
    let mut head = BytesMut::new();
    while head.len() < want {
        match stream.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            // Never poll a finished stream again.
            None => return Ok((head, Box::pin(futures::stream::empty()), true)),
        }
    }
    Ok((head, stream, false))
}

fn prepend(head: BytesMut, rest: ByteStream) -> ByteStream {
    Box::pin(futures::stream::iter([Ok(head.freeze())]).chain(rest))
}

/// Whether the stored bytes are plain JSON (no compression, no encryption);
/// the stream comes back whole.
pub async fn is_plain(stream: ByteStream) -> Result<(bool, ByteStream)> {
    let (head, rest, _) = peek(stream, MAGIC.len()).await?;
    let layered = head.starts_with(MAGIC)
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(&[0x1f, 0x8b]);
    Ok((!layered, prepend(head, rest)))
}

/// Undoes encryption and compression, whichever the stored bytes carry.
/// With `encrypted` set (the catalog says so), plaintext is refused.
pub async fn decode(stream: ByteStream, keys: &Keyring, encrypted: bool) -> Result<ByteStream> {
    let (head, rest, _) = peek(stream, HEADER_LEN).await?;
    if encrypted && !head.starts_with(MAGIC) {
        return Err(corrupt("the backup should be encrypted but is not"));
    }
    let stream = if head.starts_with(MAGIC) {
        if head.len() < HEADER_LEN {
            return Err(corrupt("encrypted file is truncated"));
        }
        let id = std::str::from_utf8(&head[MAGIC.len()..MAGIC.len() + KEY_ID_LEN])
            .map_err(|_| corrupt("bad key id in encrypted file"))?
            .to_string();
        let key = keys.find(&id).ok_or_else(|| {
            Error::precondition(format!(
                "backup is encrypted with key {id}, which is not configured (BACKUP_ENCRYPTION_KEY or BACKUP_DECRYPTION_KEYS)"
            ))
        })?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key.key)
            .map_err(|_| Error::internal("encryption key has the wrong length"))?;
        let nonce: [u8; NONCE_LEN] = head[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]
            .try_into()
            .map_err(|_| corrupt("bad nonce in encrypted file"))?;
        let decryptor = DecryptorBE32::from_aead(cipher, (&nonce).into());
        let mut body = head;
        let _ = body.split_to(HEADER_LEN);
        decrypt_stream(prepend(body, rest), decryptor)
    } else {
        prepend(head, rest)
    };
    decompress(stream).await
}

async fn decompress(stream: ByteStream) -> Result<ByteStream> {
    let (head, rest, _) = peek(stream, 4).await?;
    let is_zstd = head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let is_gzip = head.starts_with(&[0x1f, 0x8b]);
    let stream = prepend(head, rest);
    if !is_zstd && !is_gzip {
        return Ok(stream);
    }
    let reader = StreamReader::new(stream.map(|r| r.map_err(|e| std::io::Error::other(e.message))));
    let map = |r: std::io::Result<Bytes>| r.map_err(|e| corrupt(format!("decompressing: {e}")));
    Ok(if is_zstd {
        let decoder = async_compression::tokio::bufread::ZstdDecoder::new(reader);
        Box::pin(ReaderStream::with_capacity(decoder, 256 * 1024).map(map))
    } else {
        let decoder = async_compression::tokio::bufread::GzipDecoder::new(reader);
        Box::pin(ReaderStream::with_capacity(decoder, 256 * 1024).map(map))
    })
}

struct Decrypting {
    inner: ByteStream,
    pending: BytesMut,
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
}

fn tampered() -> Error {
    corrupt("decryption failed: the file is corrupt, truncated or tampered with")
}

/// Yields plaintext segment by segment; the last one must carry the last mark.
fn decrypt_stream(inner: ByteStream, decryptor: DecryptorBE32<XChaCha20Poly1305>) -> ByteStream {
    let state = Decrypting {
        inner,
        pending: BytesMut::new(),
        decryptor: Some(decryptor),
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            let decryptor = s.decryptor.as_mut()?;
            if s.pending.len() > SEGMENT + TAG {
                let segment = s.pending.split_to(SEGMENT + TAG);
                let item = decryptor
                    .decrypt_next(segment.as_ref())
                    .map(Bytes::from)
                    .map_err(|_| tampered());
                if item.is_err() {
                    s.decryptor = None;
                }
                return Some((item, s));
            }
            match s.inner.next().await {
                Some(Ok(chunk)) => s.pending.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    s.decryptor = None;
                    return Some((Err(e), s));
                }
                None => {
                    let decryptor = s.decryptor.take()?;
                    let last = s.pending.split();
                    let item = decryptor
                        .decrypt_last(last.as_ref())
                        .map(Bytes::from)
                        .map_err(|_| tampered());
                    return Some((item, s));
                }
            }
        }
    });
    Box::pin(stream) as std::pin::Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryWriter, ObjectWriter};

    fn key() -> String {
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    }

    async fn encode(data: &[u8], compression: Compression, keys: &Keyring) -> Vec<u8> {
        let stored = Arc::new(Mutex::new(Vec::new()));
        let mut w: Box<dyn ObjectWriter> = Box::new(MemoryWriter(stored.clone()));
        if let Some(k) = &keys.current {
            w = EncryptingWriter::start(w, k).await.unwrap();
        }
        let mut w = CompressingWriter::wrap(w, compression).unwrap();
        for piece in data.chunks(10_000) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        w.finish().await.unwrap();
        stored.lock().unwrap().clone()
    }

    async fn read_back(stored: Vec<u8>, keys: &Keyring) -> Result<Vec<u8>> {
        let stream: ByteStream = Box::pin(futures::stream::iter(
            stored
                .chunks(7_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let mut out = Vec::new();
        let mut s = decode(stream, keys, keys.current.is_some()).await?;
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn every_combination_round_trips() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("[{i},\"row\"],\n").into_bytes())
            .collect();
        for keys in [Keyring::default(), Keyring::new(Some(&key()), &[]).unwrap()] {
            for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
                let stored = encode(&data, c, &keys).await;
                if c != Compression::None {
                    assert!(stored.len() < data.len() / 3, "{c:?} compresses");
                }
                assert_eq!(read_back(stored, &keys).await.unwrap(), data, "{c:?}");
            }
        }
        // Exact multiples of the segment size and empty input.
        let keys = Keyring::new(Some(&key()), &[]).unwrap();
        for n in [0, SEGMENT, 2 * SEGMENT, SEGMENT + 1] {
            let data = vec![b'x'; n];
            let stored = encode(&data, Compression::None, &keys).await;
            assert_eq!(read_back(stored, &keys).await.unwrap(), data, "{n} bytes");
        }
    }

    #[tokio::test]
    async fn tampering_truncation_and_unknown_keys_are_refused() {
        let keys = Keyring::new(Some(&key()), &[]).unwrap();
        let data = vec![b'y'; 200_000];
        let stored = encode(&data, Compression::Zstd, &keys).await;
        for i in [0, 10, HEADER_LEN + 5, stored.len() / 2, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[i] ^= 0x01;
            assert!(read_back(bad, &keys).await.is_err(), "flip at {i} detected");
        }
        let stored = encode(&vec![b'z'; 200_000], Compression::None, &keys).await;
        let truncated = stored[..stored.len() - SEGMENT - TAG].to_vec();
        assert!(
            read_back(truncated, &keys).await.is_err(),
            "dropping the last segment is detected"
        );
        let other = Keyring::new(
            Some(&base64::engine::general_purpose::STANDARD.encode([9u8; 32])),
            &[],
        )
        .unwrap();
        let e = read_back(stored.clone(), &other).await.unwrap_err();
        assert!(e.message.contains("not configured"), "{}", e.message);
        // Rotation: the old key listed as a decryption key opens it.
        let rotated = Keyring::new(
            Some(&base64::engine::general_purpose::STANDARD.encode([9u8; 32])),
            &[key()],
        )
        .unwrap();
        assert_eq!(read_back(stored, &rotated).await.unwrap().len(), 200_000);
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(EncryptionKey::parse("not base64!").is_err());
        assert!(
            EncryptionKey::parse(&base64::engine::general_purpose::STANDARD.encode([1u8; 16]))
                .is_err()
        );
        assert_eq!(EncryptionKey::parse(&key()).unwrap().id.len(), KEY_ID_LEN);
    }
}
