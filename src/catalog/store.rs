//! The catalog on S3, under `PREFIX/_catalog/SOURCE/` beside the manifests:
//!
//! - `runs/NAME.jsonl`: the entries of one grouping run, written once, after its manifests
//!   (NAME ends in the hash of the content, so a run recorded again writes nothing new);
//! - `generations/G.ID.entries.jsonl` and `generations/G.pages.json`: generation G, every run so
//!   far in sorted pages, and its page table. The page table is written last and once
//!   (`If-None-Match`): two compactions racing for G leave one; the loser's runs stay pending
//!   and a lookup reads them directly until the next compaction takes them. A compaction
//!   streams generation G-1 into G, so it never holds a generation in memory.

use std::collections::BTreeSet;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tracing::{info, warn};

use super::{
    catalog_folder, decode_entries, encode_entries, generation_order, sort_entries, CatalogEntry,
    GenerationBuilder, KeyQuery, PageTable,
};
use crate::bundle::budget::ByteBudget;
use crate::bundle::upload::MultipartUpload;
use crate::error::{Error, RemoteFailure, Result};
use crate::s3::{ObjectHeaders, Put, S3};
use crate::s3uri::S3Uri;

/// Largest run file or page table read whole.
const RUN_LIMIT: u64 = 1 << 30;
/// A generation's entries object is written in one PUT up to this size, else in parts of it.
const PART_BYTES: usize = 8 << 20;

/// The catalog of one source bucket.
pub struct Catalog<'a> {
    s3: &'a S3,
    bucket: String,
    folder: String,
    source: String,
}

/// What a listing of the catalog found.
#[derive(Debug, Default)]
struct Listing {
    runs: BTreeSet<String>,
    /// Generations with a page table.
    tables: BTreeSet<u64>,
    /// Every entries object, with its generation.
    entries: Vec<(u64, String)>,
}

/// The manifests that may hold the keys of a query, and what it took to find them.
#[derive(Debug, Default)]
pub struct Lookup {
    pub entries: Vec<CatalogEntry>,
    pub generation: Option<u64>,
    /// Runs not compacted yet, read whole.
    pub pending_runs: usize,
    /// Requests made: LIST, page table, page ranges, pending runs.
    pub requests: u64,
}

impl<'a> Catalog<'a> {
    /// The catalog kept beside the manifests at `s3://bucket/prefix`.
    pub fn new(s3: &'a S3, bucket: &str, prefix: &str, source: &str) -> Self {
        Catalog {
            s3,
            bucket: bucket.to_string(),
            folder: catalog_folder(prefix, source),
            source: source.to_string(),
        }
    }

    fn uri(&self, name: &str) -> S3Uri {
        S3Uri::new(self.bucket.clone(), format!("{}/{name}", self.folder))
    }

    fn table_name(generation: u64) -> String {
        format!("generations/{generation:010}.pages.json")
    }

    /// Records the entries of a run labelled `label` (the stem of its manifests). Returns where.
    pub async fn record_run(&self, label: &str, mut entries: Vec<CatalogEntry>) -> Result<S3Uri> {
        sort_entries(&mut entries);
        let body = encode_entries(&entries);
        let digest = crate::archive::layout::hash_prefix(&String::from_utf8_lossy(&body));
        let uri = self.uri(&format!("runs/{label}.{digest}.jsonl"));
        let put = Put {
            if_none_match: true,
            ..Put::new("application/x-ndjson")
        };
        match self.s3.put(&uri, Bytes::from(body), &put).await {
            // The name is the content's: what is there is this run, recorded before.
            Ok(_) | Err(RemoteFailure::PreconditionFailed) => Ok(uri),
            Err(failure) => Err(Error::writing("PutObject", uri.to_string(), failure)),
        }
    }

    async fn list(&self) -> Result<Listing> {
        let uri = S3Uri::new(self.bucket.clone(), format!("{}/", self.folder));
        let keys = self
            .s3
            .list(&uri)
            .await
            .map_err(|f| Error::reading("ListObjectsV2", uri.to_string(), f))?;
        let mut listing = Listing::default();
        for (key, _) in keys {
            let Some(name) = key.strip_prefix(&uri.key) else {
                continue;
            };
            if let Some(run) = name
                .strip_prefix("runs/")
                .and_then(|n| n.strip_suffix(".jsonl"))
            {
                listing.runs.insert(run.to_string());
            } else if let Some(generation) = name.strip_prefix("generations/") {
                let number =
                    |text: &str| text.split('.').next().and_then(|g| g.parse::<u64>().ok());
                if generation.ends_with(".pages.json") {
                    listing.tables.extend(number(generation));
                } else if generation.ends_with(".entries.jsonl") {
                    if let Some(g) = number(generation) {
                        listing.entries.push((g, name.to_string()));
                    }
                }
            }
        }
        Ok(listing)
    }

    async fn read(&self, uri: &S3Uri, limit: u64) -> Result<Bytes> {
        self.s3
            .get_bytes(uri, limit)
            .await
            .map_err(|f| Error::reading("GetObject", uri.to_string(), f))
    }

    async fn table(&self, generation: u64) -> Result<PageTable> {
        let uri = self.uri(&Self::table_name(generation));
        let bytes = self.read(&uri, RUN_LIMIT).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_input(uri.to_string(), format!("not a catalog page table: {e}"))
        })
    }

    async fn run_entries(&self, run: &str) -> Result<Vec<CatalogEntry>> {
        let uri = self.uri(&format!("runs/{run}.jsonl"));
        decode_entries(&self.read(&uri, RUN_LIMIT).await?, &uri.to_string())
    }

    /// The manifests whose key range holds a key of `query`: a LIST, the newest page table, the
    /// pages it points to, and any run not compacted yet.
    pub async fn lookup(&self, query: &KeyQuery) -> Result<Lookup> {
        let listing = self.list().await?;
        let mut lookup = Lookup {
            requests: 1,
            ..Lookup::default()
        };
        let mut compacted = BTreeSet::new();
        if let Some(&generation) = listing.tables.last() {
            let table = self.table(generation).await?;
            lookup.requests += 1;
            let entries_uri = self.uri(&table.entries_key);
            for (start, end) in table.ranges_for(query) {
                let bytes = self
                    .s3
                    .get_range_bytes(&entries_uri, start, end - start)
                    .await
                    .map_err(|f| Error::reading("GetObject", entries_uri.to_string(), f))?;
                lookup.requests += 1;
                let page = decode_entries(&bytes, &entries_uri.to_string())?;
                lookup
                    .entries
                    .extend(page.into_iter().filter(|e| e.may_hold(query)));
            }
            compacted.extend(table.runs);
            lookup.generation = Some(generation);
        }
        for run in listing.runs.difference(&compacted) {
            let entries = self.run_entries(run).await?;
            lookup.requests += 1;
            lookup.pending_runs += 1;
            lookup
                .entries
                .extend(entries.into_iter().filter(|e| e.may_hold(query)));
        }
        sort_entries(&mut lookup.entries);
        Ok(lookup)
    }

    /// Compacts the runs no generation holds into the next generation; returns its number, or
    /// `None` when there was nothing to do or another compaction took that number first.
    /// Generations older than the one before the new one are removed afterwards.
    ///
    /// The newest generation is streamed, merged with the pending runs' entries and written as
    /// it is read (in parts, past [`PART_BYTES`]): memory holds the pending runs and the page
    /// table, not the generation (851 MiB at a billion objects after a year of weekly runs).
    pub async fn compact(&self) -> Result<Option<u64>> {
        let listing = self.list().await?;
        let latest = listing.tables.last().copied();
        let previous = match latest {
            Some(generation) => Some(self.table(generation).await?),
            None => None,
        };
        let mut runs = previous
            .as_ref()
            .map(|t| t.runs.clone())
            .unwrap_or_default();
        let pending: Vec<String> = listing
            .runs
            .iter()
            .filter(|run| !runs.contains(run))
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(None);
        }
        let mut entries = Vec::new();
        for run in &pending {
            entries.extend(self.run_entries(run).await?);
        }
        // Records of one manifest are merged within the pending runs; one also in the
        // generation stays there as a second entry, which a lookup merges (see `lookup`).
        sort_entries(&mut entries);
        entries.sort_by(generation_order);
        runs.extend(pending);
        runs.sort();
        let number = latest.map_or(1, |g| g + 1);
        // Named apart from any other compaction's, so that one that stopped before its page
        // table never blocks the next.
        let id = crate::archive::layout::hash_prefix(&format!(
            "{number}/{}/{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let entries_name = format!("generations/{number:010}.{id}.entries.jsonl");
        let entries_uri = self.uri(&entries_name);
        let mut builder = GenerationBuilder::new(number, &self.source, runs, entries_name);
        let mut writer = EntriesWriter::new(self.s3, &entries_uri);
        let merged = self
            .merge(previous.as_ref(), entries, &mut builder, &mut writer)
            .await;
        if let Err(error) = merged {
            writer.abort().await;
            return Err(error);
        }
        writer.finish().await?;
        let table = builder.finish();
        let table_uri = self.uri(&Self::table_name(number));
        let body = serde_json::to_vec(&table).unwrap_or_default();
        let put = Put {
            if_none_match: true,
            ..Put::new("application/json")
        };
        match self.s3.put(&table_uri, Bytes::from(body), &put).await {
            Ok(_) => {}
            Err(RemoteFailure::PreconditionFailed) => {
                info!("{table_uri}: another compaction wrote this generation; its runs stay pending until the next");
                self.remove(&entries_uri).await;
                return Ok(None);
            }
            Err(failure) => {
                return Err(Error::writing("PutObject", table_uri.to_string(), failure))
            }
        }
        // Keep the previous generation for lookups that listed before this one.
        let keep_from = latest.unwrap_or(number);
        for generation in listing.tables.iter().filter(|&&g| g < keep_from) {
            self.remove(&self.uri(&Self::table_name(*generation))).await;
        }
        for (generation, name) in &listing.entries {
            if *generation < keep_from {
                self.remove(&self.uri(name)).await;
            }
        }
        Ok(Some(number))
    }

    /// Writes the entries of `previous` (streamed) and `pending` (in [`generation_order`]),
    /// merged in that order.
    async fn merge(
        &self,
        previous: Option<&PageTable>,
        pending: Vec<CatalogEntry>,
        builder: &mut GenerationBuilder,
        writer: &mut EntriesWriter<'_>,
    ) -> Result<()> {
        let mut pending = pending.into_iter().peekable();
        if let Some(table) = previous {
            let uri = self.uri(&table.entries_key);
            let got = self
                .s3
                .get_stream(&uri)
                .await
                .map_err(|f| Error::reading("GetObject", uri.to_string(), f))?;
            let mut lines = Lines::new(got.body, uri.to_string());
            while let Some(entry) = lines.next_entry().await? {
                while let Some(first) = pending.next_if(|p| generation_order(p, &entry).is_lt()) {
                    writer.write(builder.push(&first)).await?;
                }
                writer.write(builder.push(&entry)).await?;
            }
        }
        for entry in pending {
            writer.write(builder.push(&entry)).await?;
        }
        Ok(())
    }
    /// Deletes a catalog object no lookup needs any more; a failure is only logged.
    async fn remove(&self, uri: &S3Uri) {
        if let Err(failure) = self.s3.delete(uri).await {
            warn!("could not delete {uri}, which the catalog no longer needs: {failure}");
        }
    }
}

/// A generation's entries object as it is written: one PUT when small, else a multipart upload
/// of [`PART_BYTES`] parts. Written where no object is (`If-None-Match`).
struct EntriesWriter<'a> {
    s3: &'a S3,
    uri: S3Uri,
    buffer: Vec<u8>,
    upload: Option<MultipartUpload>,
    parts: i32,
    budget: ByteBudget,
}

impl<'a> EntriesWriter<'a> {
    fn new(s3: &'a S3, uri: &S3Uri) -> Self {
        EntriesWriter {
            s3,
            uri: uri.clone(),
            buffer: Vec::new(),
            upload: None,
            parts: 0,
            // Two parts in flight while the next fills.
            budget: ByteBudget::new(2 * PART_BYTES as u64),
        }
    }

    async fn write(&mut self, line: Vec<u8>) -> Result<()> {
        self.buffer.extend_from_slice(&line);
        if self.buffer.len() >= PART_BYTES {
            self.send_part().await?;
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<()> {
        if self.upload.is_none() {
            let headers = ObjectHeaders {
                content_type: Some("application/x-ndjson".to_string()),
                ..ObjectHeaders::default()
            };
            self.upload =
                Some(MultipartUpload::create_with(self.s3, &self.uri, &headers, None, 2).await?);
        }
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        let permit = self.budget.acquire(body.len() as u64).await;
        self.parts += 1;
        if let Some(upload) = self.upload.as_mut() {
            upload.send_part(self.parts, body, permit).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<()> {
        let Some(mut upload) = self.upload.take() else {
            let put = Put {
                if_none_match: true,
                ..Put::new("application/x-ndjson")
            };
            let body = Bytes::from(std::mem::take(&mut self.buffer));
            return self
                .s3
                .put(&self.uri, body, &put)
                .await
                .map(|_| ())
                .map_err(|f| Error::writing("PutObject", self.uri.to_string(), f));
        };
        if !self.buffer.is_empty() {
            self.upload = Some(upload);
            self.send_part().await?;
            upload = self.upload.take().ok_or(Error::Interrupted)?;
        }
        match upload.complete_if(None, true).await {
            Ok(_) => Ok(()),
            Err(error) => {
                upload.abort().await;
                Err(error)
            }
        }
    }

    async fn abort(&mut self) {
        if let Some(upload) = self.upload.as_mut() {
            upload.abort().await;
        }
    }
}

/// The entries of an entries object, read line by line as it downloads.
struct Lines {
    body: ByteStream,
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
    location: String,
    line: usize,
}

impl Lines {
    fn new(body: ByteStream, location: String) -> Self {
        Lines {
            body,
            buffer: Vec::new(),
            start: 0,
            location,
            line: 0,
        }
    }

    async fn next_entry(&mut self) -> Result<Option<CatalogEntry>> {
        loop {
            let rest = &self.buffer[self.start..];
            if let Some(end) = rest.iter().position(|&b| b == b'\n') {
                let line = &rest[..end];
                self.start += end + 1;
                self.line += 1;
                if line.is_empty() {
                    continue;
                }
                return serde_json::from_slice(line).map(Some).map_err(|e| {
                    Error::bad_input(
                        self.location.clone(),
                        format!("line {} is not a catalog entry: {e}", self.line),
                    )
                });
            }
            // Keep only the unfinished line before reading on.
            self.buffer.drain(..self.start);
            self.start = 0;
            match self.body.try_next().await.map_err(|e| {
                Error::reading(
                    "GetObject",
                    self.location.clone(),
                    RemoteFailure::Transient(e.to_string()),
                )
            })? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None if self.buffer.is_empty() => return Ok(None),
                // A last line without its newline.
                None => self.buffer.push(b'\n'),
            }
        }
    }
}
