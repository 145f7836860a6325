//! Cloudinary storage: every object is a `raw` asset (or several, see
//! `upload`) under `<folder>/`, written through the signed Upload API, read
//! back through the signed private download API (never a public URL),
//! listed through the rate-limited Admin API with a cache.
//!
//! Admin API budget (500 or 2,000 calls an hour): the listing is cached for
//! `list_cache_secs` (default 60 s) and kept up to date by this process's own writes and deletes;
//! while `X-FeatureRateLimit-Remaining` is 0 the cached listing is served
//! until the reset time; `check` (every few seconds from health) makes a real
//! call at most every `CHECK_EVERY`, and none while other requests succeed.

pub mod client;
pub mod config;
pub mod sign;
pub mod upload;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{ByteStream, ObjectWriter, Storage};
use crate::error::{Error, ErrorCode, Result};
use client::{Client, Resource, UploadOutcome};
use config::CloudinaryConfig;
use upload::{CloudinaryWriter, INDEX_SUFFIX, PartsIndex, index_name, part_of};

/// How long `check` trusts the last real answer from Cloudinary.
pub const CHECK_EVERY: Duration = Duration::from_secs(300);
/// How long `check` repeats a failure before asking again.
const CHECK_FAILED_EVERY: Duration = Duration::from_secs(30);
/// The free plan's raw asset limit: used when `/usage` cannot be read.
pub const FREE_PLAN_RAW_MAX: u64 = 10_485_760;

struct Listing {
    /// When the fetch that produced it started.
    fetched: Instant,
    /// Object name (public_id without the folder) -> asset.
    assets: BTreeMap<String, Resource>,
}

#[derive(Default)]
struct ListingState {
    listing: Option<Listing>,
    /// While a fetch runs: this process's own writes (`Some`) and deletes
    /// (`None`) since it started, applied over its result so that none is lost.
    changes: Option<Vec<(String, Option<Resource>)>>,
}

/// What the storage and its writers share.
pub struct Inner {
    pub(crate) client: Client,
    /// Held only briefly, never across a request to Cloudinary.
    listing: tokio::sync::Mutex<ListingState>,
    /// Held through a listing fetch, so that only one runs at a time.
    refresh: tokio::sync::Mutex<()>,
    /// `media_limits.raw_max_size_bytes`, read once.
    plan_cap: tokio::sync::OnceCell<Option<u64>>,
    last_check: std::sync::Mutex<Option<(Instant, Result<()>)>>,
}

impl Inner {
    /// Records an asset this process just wrote.
    pub(crate) async fn remember(&self, name: &str, resource: &Resource) {
        let mut state = self.listing.lock().await;
        if let Some(listing) = state.listing.as_mut() {
            listing.assets.insert(name.to_string(), resource.clone());
        }
        if let Some(changes) = state.changes.as_mut() {
            changes.push((name.to_string(), Some(resource.clone())));
        }
    }

    /// Records an asset this process just destroyed.
    pub(crate) async fn forget(&self, name: &str) {
        let mut state = self.listing.lock().await;
        if let Some(listing) = state.listing.as_mut() {
            listing.assets.remove(name);
        }
        if let Some(changes) = state.changes.as_mut() {
            changes.push((name.to_string(), None));
        }
    }

    async fn fetch_all(&self) -> Result<BTreeMap<String, Resource>> {
        self.fetch_prefix(&format!("{}/", self.client.config.folder))
            .await
    }

    /// Every asset directly in the folder whose public_id starts with
    /// `prefix` (which starts with `<folder>/`), asked of Cloudinary now.
    pub(crate) async fn fetch_prefix(&self, prefix: &str) -> Result<BTreeMap<String, Resource>> {
        let folder = format!("{}/", self.client.config.folder);
        let mut assets = BTreeMap::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0u32;
        loop {
            let (resources, next) = self.client.list_page(prefix, cursor.as_deref()).await?;
            pages += 1;
            for resource in resources {
                if let Some(name) = resource.public_id.strip_prefix(&folder)
                    && !name.contains('/')
                    && !name.is_empty()
                {
                    assets.insert(name.to_string(), resource);
                }
            }
            match next {
                Some(next) if pages < 10_000 => cursor = Some(next),
                _ => break,
            }
        }
        tracing::debug!(assets = assets.len(), pages, "listed Cloudinary folder");
        Ok(assets)
    }

    /// The cached listing when it may be served: younger than `max_age`,
    /// fetched after `asked`, or the Admin API budget is used up.
    fn serve_cached(
        &self,
        state: &ListingState,
        max_age: Duration,
        asked: Instant,
    ) -> Option<BTreeMap<String, Resource>> {
        let listing = state.listing.as_ref()?;
        if listing.fetched.elapsed() < max_age || listing.fetched >= asked {
            return Some(listing.assets.clone());
        }
        if let Some(until) = self.client.rate_limited_until() {
            tracing::warn!(
                reset = %httpdate::fmt_http_date(until),
                "Cloudinary Admin API budget used up: serving the cached listing"
            );
            return Some(listing.assets.clone());
        }
        None
    }

    /// Every asset in the folder, from a listing at most `max_age` old.
    /// The listing lock is never held while Cloudinary is asked, so writers
    /// recording their assets do not wait for a fetch.
    async fn assets(&self, max_age: Duration) -> Result<BTreeMap<String, Resource>> {
        let asked = Instant::now();
        if let Some(assets) = self.serve_cached(&*self.listing.lock().await, max_age, asked) {
            return Ok(assets);
        }
        let _refresh = self.refresh.lock().await;
        // A fetch that started after this call was made is as good as a new one.
        let started = {
            let mut state = self.listing.lock().await;
            if let Some(assets) = self.serve_cached(&state, max_age, asked) {
                return Ok(assets);
            }
            state.changes = Some(Vec::new());
            Instant::now()
        };
        let fetched = self.fetch_all().await;
        let mut state = self.listing.lock().await;
        let changes = state.changes.take().unwrap_or_default();
        match fetched {
            Ok(mut assets) => {
                for (name, change) in changes {
                    match change {
                        Some(resource) => assets.insert(name, resource),
                        None => assets.remove(&name),
                    };
                }
                state.listing = Some(Listing {
                    fetched: started,
                    assets: assets.clone(),
                });
                Ok(assets)
            }
            Err(e) if e.code == ErrorCode::Unavailable && state.listing.is_some() => {
                tracing::warn!(error = %e.message, "Cloudinary listing failed: serving the cached one");
                Ok(state
                    .listing
                    .as_ref()
                    .map(|l| l.assets.clone())
                    .unwrap_or_default())
            }
            Err(e) => Err(e),
        }
    }

    /// The cached listing as it is, without asking Cloudinary.
    async fn cached(&self) -> BTreeMap<String, Resource> {
        self.listing
            .lock()
            .await
            .listing
            .as_ref()
            .map(|l| l.assets.clone())
            .unwrap_or_default()
    }

    /// The largest asset to write: the configured part size, lowered to the
    /// plan's raw limit.
    async fn asset_cap(&self) -> u64 {
        let plan = self
            .plan_cap
            .get_or_try_init(|| async {
                self.client
                    .usage()
                    .await
                    .map(|u| u.media_limits.raw_max_size_bytes)
            })
            .await;
        let plan = match plan {
            Ok(plan) => *plan,
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot read the Cloudinary plan's raw size limit; assuming the free plan's for this backup");
                Some(FREE_PLAN_RAW_MAX)
            }
        };
        match (self.client.config.part_size, plan) {
            (Some(part), Some(plan)) => part.min(plan),
            (Some(part), None) => part,
            (None, Some(plan)) => plan,
            (None, None) => FREE_PLAN_RAW_MAX,
        }
    }
}

pub struct CloudinaryStorage {
    inner: Arc<Inner>,
}

impl CloudinaryStorage {
    pub fn open(url: &str, api_base: &str) -> Result<Self> {
        let config = Arc::new(CloudinaryConfig::parse(url, api_base)?);
        Ok(Self {
            inner: Arc::new(Inner {
                client: Client::new(config)?,
                listing: tokio::sync::Mutex::new(ListingState::default()),
                refresh: tokio::sync::Mutex::new(()),
                plan_cap: tokio::sync::OnceCell::new(),
                last_check: std::sync::Mutex::new(None),
            }),
        })
    }

    fn config(&self) -> &CloudinaryConfig {
        &self.inner.client.config
    }

    /// Names come from validated backup ids; refuse anything path-like and
    /// the reserved part and index suffixes anyway.
    fn validate(&self, name: &str) -> Result<()> {
        let bad_char = |c: char| matches!(c, '/' | '\\' | '\0' | '?' | '#' | '&' | '%' | '<' | '>');
        if name.is_empty()
            || name.starts_with('.')
            || name.contains(bad_char)
            || name.ends_with(INDEX_SUFFIX)
            || part_of(name).is_some()
        {
            return Err(Error::invalid(format!("invalid object name {name:?}")));
        }
        Ok(())
    }

    fn public_id(&self, name: &str) -> String {
        self.config().public_id(name)
    }

    async fn index(&self, name: &str) -> Result<Option<PartsIndex>> {
        let public_id = self.public_id(&index_name(name));
        match self.inner.client.download_bytes(&public_id).await? {
            Some(bytes) => PartsIndex::parse(name, &bytes).map(Some),
            None => Ok(None),
        }
    }
}

/// Streams assets one after the other, skipping `skip` bytes first and
/// checking each part's size and SHA-256 against the index.
struct PartReader {
    inner: Arc<Inner>,
    parts: VecDeque<(String, Option<(u64, String)>)>,
    current: Option<CurrentPart>,
    skip: u64,
}

struct CurrentPart {
    public_id: String,
    stream: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    expected: Option<(u64, String)>,
    seen: u64,
    hasher: Sha256,
}

impl PartReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(part) = self.current.as_mut() {
                match part.stream.next().await {
                    Some(Ok(mut chunk)) => {
                        part.seen += chunk.len() as u64;
                        part.hasher.update(&chunk);
                        if self.skip > 0 {
                            let cut = self.skip.min(chunk.len() as u64);
                            self.skip -= cut;
                            chunk = chunk.slice(cut as usize..);
                        }
                        if !chunk.is_empty() {
                            return Ok(Some(chunk));
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        return Err(Error::unavailable(format!(
                            "downloading {} from Cloudinary: {}",
                            part.public_id,
                            e.without_url()
                        )));
                    }
                    None => {
                        if let Some((bytes, sha256)) = &part.expected {
                            let digest = hex::encode(std::mem::take(&mut part.hasher).finalize());
                            if part.seen != *bytes || &digest != sha256 {
                                return Err(Error::internal(format!(
                                    "{} from Cloudinary does not match its parts index ({} bytes, expected {bytes})",
                                    part.public_id, part.seen
                                )));
                            }
                        }
                        self.current = None;
                    }
                }
            }
            let Some((public_id, expected)) = self.parts.pop_front() else {
                return Ok(None);
            };
            let response = self
                .inner
                .client
                .download(&public_id)
                .await?
                .ok_or_else(|| Error::not_found(format!("{public_id} is missing on Cloudinary")))?;
            self.current = Some(CurrentPart {
                public_id,
                stream: response.bytes_stream().boxed(),
                expected,
                seen: 0,
                hasher: Sha256::new(),
            });
        }
    }

    fn into_stream(self) -> ByteStream {
        Box::pin(futures::stream::try_unfold(self, |mut reader| async move {
            Ok(reader.next_chunk().await?.map(|chunk| (chunk, reader)))
        }))
    }
}

#[async_trait]
impl Storage for CloudinaryStorage {
    fn describe(&self) -> String {
        self.config().describe()
    }

    async fn check(&self) -> Result<()> {
        // Any recent successful request proves reachability and credentials.
        if self
            .inner
            .client
            .last_ok()
            .is_some_and(|t| t.elapsed() < CHECK_EVERY)
        {
            return Ok(());
        }
        if let Ok(last) = self.inner.last_check.lock()
            && let Some((at, result)) = last.as_ref()
        {
            let fresh_for = if result.is_ok() {
                CHECK_EVERY
            } else {
                CHECK_FAILED_EVERY
            };
            if at.elapsed() < fresh_for {
                return result.clone();
            }
        }
        if self.inner.client.rate_limited_until().is_some() {
            // The Upload API is not rate limited; the budget is not an outage.
            return Ok(());
        }
        let result = self
            .inner
            .client
            .usage()
            .await
            .map(|_| ())
            .map_err(|e| Error::unavailable(format!("Cloudinary storage: {}", e.message)));
        if let Ok(mut last) = self.inner.last_check.lock() {
            *last = Some((Instant::now(), result.clone()));
        }
        result
    }

    async fn probe(&self) -> Result<()> {
        // An upload per probe would spend the account's upload quota; the
        // authenticated Admin API call `check` makes (cached, and skipped
        // after any recent successful request) proves reachability and
        // credentials instead.
        self.check().await
    }

    async fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        self.validate(name)?;
        let cap = self.inner.asset_cap().await;
        Ok(Box::new(CloudinaryWriter::new(
            self.inner.clone(),
            name,
            cap,
        )))
    }

    async fn read(&self, name: &str, offset: u64) -> Result<ByteStream> {
        self.validate(name)?;
        let mut reader = PartReader {
            inner: self.inner.clone(),
            parts: VecDeque::new(),
            current: None,
            skip: offset,
        };
        match self.index(name).await? {
            Some(index) => {
                for part in index.parts {
                    // Whole parts before the offset are not downloaded at all.
                    if reader.parts.is_empty() && reader.skip >= part.bytes {
                        reader.skip -= part.bytes;
                        continue;
                    }
                    reader
                        .parts
                        .push_back((part.public_id, Some((part.bytes, part.sha256))));
                }
            }
            None => {
                let public_id = self.public_id(name);
                // Fail now, not in the middle of the stream, when it is missing.
                let response = self
                    .inner
                    .client
                    .download(&public_id)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("{name} not found on Cloudinary")))?;
                reader.current = Some(CurrentPart {
                    public_id,
                    stream: response.bytes_stream().boxed(),
                    expected: None,
                    seen: 0,
                    hasher: Sha256::new(),
                });
            }
        }
        Ok(reader.into_stream())
    }

    async fn put_small(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.validate(name)?;
        let public_id = self.public_id(name);
        match self.inner.client.upload(&public_id, bytes, None).await? {
            UploadOutcome::Done(resource) => {
                self.inner.remember(name, &resource).await;
                Ok(())
            }
            UploadOutcome::Partial => Err(Error::internal(format!(
                "uploading {public_id}: unexpected partial answer"
            ))),
        }
    }

    async fn get_small(&self, name: &str) -> Result<Bytes> {
        self.validate(name)?;
        self.inner
            .client
            .download_bytes(&self.public_id(name))
            .await?
            .ok_or_else(|| Error::not_found(format!("{name} not found on Cloudinary")))
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.validate(name)?;
        let index = match self.index(name).await {
            Ok(index) => index,
            // Cloudinary unreachable: delete nothing rather than half of it.
            Err(e) if e.code == ErrorCode::Unavailable => return Err(e),
            Err(e) => {
                tracing::warn!(object = %name, error = %e.message, "unreadable parts index; deleting the parts found by listing");
                None
            }
        };
        // Parts named by the index, plus any the listing knows of (an index lost mid-delete).
        let mut parts: BTreeSet<String> = index
            .iter()
            .flat_map(|i| i.parts.iter().map(|p| p.name.clone()))
            .filter(|p| p != name)
            .collect();
        parts.extend(
            self.inner
                .cached()
                .await
                .into_keys()
                .filter(|n| part_of(n) == Some(name)),
        );
        let mut found = index.is_some();
        for part in &parts {
            // "not found" for a part already gone is no error.
            if self.inner.client.destroy(&self.public_id(part)).await? {
                found = true;
            }
            self.inner.forget(part).await;
        }
        if index.is_some() {
            let index_name = index_name(name);
            self.inner
                .client
                .destroy(&self.public_id(&index_name))
                .await?;
            self.inner.forget(&index_name).await;
        }
        if self.inner.client.destroy(&self.public_id(name)).await? {
            found = true;
        }
        self.inner.forget(name).await;
        if !found {
            return Err(Error::not_found(format!("{name} not found on Cloudinary")));
        }
        Ok(())
    }

    async fn list(&self, suffix: &str) -> Result<Vec<String>> {
        let assets = self.inner.assets(self.config().list_ttl).await?;
        let names: BTreeSet<String> = assets
            .keys()
            .filter(|n| part_of(n).is_none())
            .map(|n| n.strip_suffix(INDEX_SUFFIX).unwrap_or(n).to_string())
            .filter(|n| n.ends_with(suffix) && !n.starts_with('.'))
            .collect();
        Ok(names.into_iter().collect())
    }

    async fn clean_incomplete(&self) -> Result<usize> {
        let assets = self.inner.assets(Duration::ZERO).await?;
        let newest = newest_by_object(&assets);
        let now = chrono::Utc::now();
        let mut removed = 0;
        for name in assets.keys() {
            let Some(object) = part_of(name) else {
                continue;
            };
            // An upload runs as long as it needs: it is judged by its newest
            // asset, never by an early part.
            let stale = newest
                .get(object)
                .and_then(|t| (now - *t).to_std().ok())
                .is_some_and(|age| age >= super::STALE_AFTER);
            if stale && !assets.contains_key(&index_name(object)) {
                tracing::warn!(asset = %name, "removing a part of an interrupted upload");
                if self
                    .inner
                    .client
                    .destroy(&self.public_id(name))
                    .await
                    .is_ok()
                {
                    self.inner.forget(name).await;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The age of the object's newest asset (itself, a part or its index).
    async fn age(&self, name: &str) -> Option<Duration> {
        let assets = self.inner.assets(self.config().list_ttl).await.ok()?;
        let newest = newest_by_object(&assets).remove(name)?;
        (chrono::Utc::now() - newest).to_std().ok()
    }
}

/// The object an asset belongs to: `N` for `N`, `N.partNNNN` and `N.parts.json`.
fn object_of(name: &str) -> &str {
    part_of(name)
        .or_else(|| name.strip_suffix(INDEX_SUFFIX))
        .unwrap_or(name)
}

/// For every object, when its newest asset was created. An asset without a
/// readable `created_at` counts as created now (it is never judged stale).
fn newest_by_object(
    assets: &BTreeMap<String, Resource>,
) -> BTreeMap<String, chrono::DateTime<chrono::Utc>> {
    let now = chrono::Utc::now();
    let mut newest: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for (name, resource) in assets {
        let created = resource.created().unwrap_or(now);
        let entry = newest.entry(object_of(name).to_string()).or_insert(created);
        if created > *entry {
            *entry = created;
        }
    }
    newest
}
