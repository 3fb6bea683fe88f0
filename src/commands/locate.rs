//! `locate`: where an object of a source bucket is now: its archive (or big-object copy),
//! member, offsets and size, when it was archived, and whether its archive must be restored
//! before it can be read. Found through the catalog beside the manifests (see
//! [`crate::catalog`]), then the one or few indexes whose key range holds the key.

use std::collections::{BTreeMap, HashSet};

use aws_config::SdkConfig;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use super::recall_place::{Places, RecallPlace};
use crate::archive::layout::{big_object_key, BundleLayout, Compression, CopyOf};
use crate::archive::records::{parse_dlq, parse_index, IndexRow};
use crate::aws::AwsOptions;
use crate::catalog::store::Catalog;
use crate::catalog::{CatalogEntry, KeyQuery};
use crate::error::{Error, ExitCode, Result};
use crate::manifest::parse_manifest;
use crate::s3::{ObjectHead, S3};
use crate::s3uri::S3Uri;
use crate::size::human_bytes;
use crate::thaw::Need;
use crate::verify::check::get_optional;

/// Candidate manifests read at once (a prefix can name many).
const CONCURRENCY: usize = 8;

/// `s3bundler locate`.
#[derive(Debug, Clone, clap::Args)]
pub struct LocateArgs {
    /// The object as it was: `s3://SOURCE_BUCKET/KEY` (with `--prefix`, just the bucket).
    #[arg(value_name = "s3://SOURCE_BUCKET/KEY")]
    pub object: S3Uri,
    /// Only this version (its version ID in the source bucket).
    #[arg(long = "version-id", value_name = "VERSION")]
    pub version_id: Option<String>,
    /// Every archived object whose key starts with this, instead of one key.
    #[arg(long = "prefix", value_name = "P")]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub place: RecallPlace,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One archived object.
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub size: u64,
    pub etag: String,
    /// The object's own last-modified time, as archived.
    pub last_modified: String,
    /// The archive that holds it, or the copy a big object was copied to.
    pub archive: String,
    /// True for a big object's server-side copy (`archive` is the copy itself).
    pub copy: bool,
    pub member: String,
    pub header_offset: Option<u64>,
    pub data_offset: Option<u64>,
    pub index: String,
    pub manifest: String,
    /// When the archive (or copy) was written.
    pub archived: Option<String>,
    /// Its storage class now, and whether it must be restored before it can be read.
    pub storage_class: Option<String>,
    pub needs_restore: bool,
    /// Where a restore of it stands: not needed, needed, in progress, ready until T.
    pub restore: Option<String>,
    /// A big object's index row (its headers, metadata and tags), for `extract`.
    #[serde(skip)]
    pub copy_row: Option<IndexRow>,
}

/// Objects by key and version.
type Identities = HashSet<(String, Option<String>)>;

impl Located {
    /// Its key and version.
    fn identity(&self) -> (String, Option<String>) {
        (self.key.clone(), self.version_id.clone())
    }
}

/// An object that a manifest listed but that was not archived.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLettered {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub reason: String,
    pub detail: String,
    pub dlq: String,
}

/// What `locate` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocateReport {
    pub located: Vec<Located>,
    /// DLQ rows of objects not archived elsewhere.
    pub dead_lettered: Vec<DeadLettered>,
    /// Manifests whose range holds the key but that are not bundled yet.
    pub not_bundled: Vec<String>,
    /// Manifests the catalog named (after their key ranges and key filters): the ones searched.
    pub candidates: Vec<String>,
    /// Requests made, catalog and records.
    pub requests: u64,
}

/// `s3bundler locate`: exit 0 when the object is archived, 1 when it is not.
pub async fn run(aws: &AwsOptions, config: &SdkConfig, args: &LocateArgs) -> Result<ExitCode> {
    let places = args.place.require("locate")?;
    let query = KeyQuery::of_object("locate", &args.object.key, args.prefix.as_deref())?;
    let s3 = aws.s3(config);
    let report = locate(
        &s3,
        &places,
        &args.object.bucket,
        &query,
        args.version_id.as_deref(),
    )
    .await?;
    if args.json {
        super::print_json(&report);
    } else {
        print_report(&args.object.bucket, &query, &report);
    }
    Ok(if report.located.is_empty() {
        ExitCode::Partial
    } else {
        ExitCode::Success
    })
}

/// Finds the objects of `source` that `query` (and `version_id`) asks for.
pub async fn locate(
    s3: &S3,
    places: &Places,
    source: &str,
    query: &KeyQuery,
    version_id: Option<&str>,
) -> Result<LocateReport> {
    let catalog = Catalog::new(s3, &places.manifests.bucket, &places.manifests.key, source);
    let lookup = catalog.lookup(query).await?;
    let wanted = Wanted {
        source,
        query,
        version_id,
    };
    let mut found: Vec<Found> = stream::iter(lookup.entries.iter())
        .map(|entry| read_index(s3, places, &wanted, entry))
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    // DLQs and big objects' copies (which indexes do not list) only when they can tell
    // something: a key found in no index, or a prefix.
    let located = found.iter().any(|f| !f.located.is_empty());
    if !located || matches!(query, KeyQuery::Prefix(_)) {
        let indexed: Vec<Option<Identities>> = found
            .iter()
            .map(|f| {
                f.indexed
                    .then(|| f.located.iter().map(Located::identity).collect())
            })
            .collect();
        let rest: Vec<Found> = stream::iter(lookup.entries.iter().zip(indexed))
            .map(|(entry, indexed)| read_unindexed(s3, places, &wanted, entry, indexed))
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        found.extend(rest);
    }
    let mut report = LocateReport {
        candidates: lookup.entries.iter().map(|e| e.manifest.clone()).collect(),
        requests: lookup.requests,
        ..LocateReport::default()
    };
    let mut dead = Vec::new();
    for found in found {
        report.requests += found.requests;
        report.located.extend(found.located);
        dead.extend(found.dead);
        report.not_bundled.extend(found.not_bundled);
    }
    // An object dead-lettered once and archived by a redrive is archived.
    let archived: Identities = report.located.iter().map(Located::identity).collect();
    report.dead_lettered = dead
        .into_iter()
        .filter(|d| !archived.contains(&(d.key.clone(), d.version_id.clone())))
        .collect();
    report
        .located
        .sort_by(|a, b| (&a.key, &a.last_modified).cmp(&(&b.key, &b.last_modified)));
    Ok(report)
}

/// What is asked for.
struct Wanted<'a> {
    source: &'a str,
    query: &'a KeyQuery,
    version_id: Option<&'a str>,
}

impl Wanted<'_> {
    fn holds(&self, bucket: &str, key: &str, version_id: Option<&str>) -> bool {
        bucket == self.source
            && self.query.matches(key)
            && self
                .version_id
                .is_none_or(|wanted| version_id == Some(wanted))
    }
}

/// What one manifest's records say of the wanted objects.
#[derive(Default)]
struct Found {
    located: Vec<Located>,
    dead: Vec<DeadLettered>,
    not_bundled: Option<String>,
    /// Its index exists: the manifest committed.
    indexed: bool,
    requests: u64,
}

/// Where a candidate manifest's records are.
fn records_of(places: &Places, source: &str, entry: &CatalogEntry) -> (S3Uri, BundleLayout) {
    let manifest = S3Uri::new(places.manifests.bucket.clone(), entry.manifest.clone());
    let layout = BundleLayout::new(
        &places.archive_prefix,
        source,
        &entry.manifest,
        Compression::None,
    );
    (manifest, layout)
}

/// Reads one candidate manifest's index, and for the wanted objects it lists, a LIST of its
/// archive's name (the compression is not known otherwise) and a HEAD of each archive or copy
/// that holds one. A manifest whose range holds the key but that does not list it (one per
/// incremental run, typically) costs one GET.
async fn read_index(
    s3: &S3,
    places: &Places,
    wanted: &Wanted<'_>,
    entry: &CatalogEntry,
) -> Result<Found> {
    let (manifest, layout) = records_of(places, wanted.source, entry);
    let index = S3Uri::new(places.archive_bucket.clone(), layout.index_key.clone());
    let mut found = Found {
        requests: 1,
        ..Found::default()
    };
    let Some(bytes) = get_optional(s3, &index).await? else {
        return Ok(found);
    };
    found.indexed = true;
    let rows: Vec<IndexRow> = parse_index(&bytes, &index.to_string())?
        .into_iter()
        .filter(|row| wanted.holds(&row.bucket, &row.key, row.version_id.as_deref()))
        .collect();
    let archive = if rows.iter().any(|row| row.header_offset.is_some()) {
        let stem = layout.index_key.trim_end_matches(".index");
        let named = S3Uri::new(places.archive_bucket.clone(), format!("{stem}."));
        let listed: HashSet<String> = s3
            .list(&named)
            .await
            .map_err(|f| Error::reading("ListObjectsV2", named.to_string(), f))?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        found.requests += 1;
        Compression::ALL
            .into_iter()
            .map(|c| format!("{stem}.{}", c.extension()))
            .find(|key| listed.contains(key))
            .map(|key| S3Uri::new(places.archive_bucket.clone(), key))
    } else {
        None
    };
    let mut heads: BTreeMap<String, Option<ObjectHead>> = BTreeMap::new();
    for row in rows {
        let copy = row.header_offset.is_none();
        let holder = match (&archive, copy) {
            (_, true) => S3Uri::new(places.archive_bucket.clone(), row.member.clone()),
            (Some(archive), false) => archive.clone(),
            // An index without its archive: verify reports it; nothing to point at.
            (None, false) => continue,
        };
        let holder_name = holder.to_string();
        if !heads.contains_key(&holder_name) {
            let head = s3
                .head(&holder)
                .await
                .map_err(|f| Error::reading("HeadObject", holder_name.clone(), f))?;
            found.requests += 1;
            heads.insert(holder_name.clone(), head);
        }
        let head = heads.get(&holder_name).and_then(Option::as_ref);
        found
            .located
            .push(located(row, holder_name, head, &index, &manifest));
    }
    Ok(found)
}

/// An archived object: its index row, where it is (`holder`: its archive, or for a big object
/// its copy) and the holder's HEAD.
fn located(
    row: IndexRow,
    holder: String,
    head: Option<&ObjectHead>,
    index: &S3Uri,
    manifest: &S3Uri,
) -> Located {
    let copy = row.header_offset.is_none();
    let copy_row = copy.then(|| row.clone());
    Located {
        bucket: row.bucket,
        key: row.key,
        version_id: row.version_id,
        size: row.size,
        etag: row.etag,
        last_modified: row.last_modified,
        archive: holder,
        copy,
        member: row.member,
        header_offset: row.header_offset,
        data_offset: row.data_offset,
        index: index.to_string(),
        manifest: manifest.to_string(),
        archived: head.and_then(|h| h.last_modified.clone()),
        // S3 names no class for STANDARD.
        storage_class: head.map(|h| {
            h.storage_class
                .clone()
                .unwrap_or_else(|| "STANDARD".to_string())
        }),
        needs_restore: head.is_some_and(|h| !Need::of(h).readable()),
        restore: head.map(|h| Need::of(h).describe()),
        copy_row,
    }
}

/// What a candidate manifest says beyond its index: the wanted objects its DLQ lists, the big
/// objects it copied (their `.metadata` beside each copy: indexes do not list copies), and
/// whether it is not bundled yet (neither index nor DLQ). `indexed` holds the objects its index
/// located, when it has one: a manifest without its index (not bundled, or stopped) has no
/// copies to report.
async fn read_unindexed(
    s3: &S3,
    places: &Places,
    wanted: &Wanted<'_>,
    entry: &CatalogEntry,
    indexed: Option<Identities>,
) -> Result<Found> {
    let (manifest, layout) = records_of(places, wanted.source, entry);
    let dlq = S3Uri::new(places.manifests.bucket.clone(), layout.dlq_key.clone());
    let bytes = get_optional(s3, &dlq).await?;
    let mut found = Found {
        requests: 1,
        not_bundled: (indexed.is_none() && bytes.is_none()).then(|| manifest.to_string()),
        ..Found::default()
    };
    if let Some(bytes) = &bytes {
        found.dead = parse_dlq(bytes, &dlq.to_string())?
            .into_iter()
            .filter(|row| wanted.holds(&row.bucket, &row.key, row.version_id.as_deref()))
            .map(|row| DeadLettered {
                bucket: row.bucket,
                key: row.key,
                version_id: row.version_id,
                reason: row.reason.as_str().to_string(),
                detail: row.detail,
                dlq: dlq.to_string(),
            })
            .collect();
    }
    let Some(indexed) = indexed else {
        return Ok(found);
    };
    let Some(body) = get_optional(s3, &manifest).await? else {
        return Ok(found);
    };
    found.requests += 1;
    let index = S3Uri::new(places.archive_bucket.clone(), layout.index_key.clone());
    // Objects the index or the DLQ accounts for, by key and by (key, version): a manifest row
    // without a version is any version of its key. Sets, so that a prefix's thousands of rows
    // are each one lookup.
    let records = indexed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .chain(
            found
                .dead
                .iter()
                .map(|d| (d.key.as_str(), d.version_id.as_deref())),
        );
    let versions: HashSet<(&str, Option<&str>)> = records.collect();
    let keys: HashSet<&str> = versions.iter().map(|(k, _)| *k).collect();
    let accounted = |key: &str, version: Option<&str>| match version {
        None => keys.contains(key),
        Some(_) => versions.contains(&(key, version)),
    };
    let mut copies = Vec::new();
    for row in parse_manifest(&body, &manifest.to_string())? {
        let version = row.version_id.as_deref();
        if !wanted.holds(&row.bucket, &row.key, version) || accounted(&row.key, version) {
            continue;
        }
        let of = CopyOf::of(version, row.etag.as_deref());
        let key = big_object_key(&places.archive_prefix, &row.bucket, &row.key, of);
        copies.push(S3Uri::new(places.archive_bucket.clone(), key));
    }
    for copy in copies {
        let metadata = S3Uri::new(copy.bucket.clone(), format!("{}.metadata", copy.key));
        found.requests += 1;
        let Some(record) = get_optional(s3, &metadata).await? else {
            continue;
        };
        let Some(row) = parse_index(&record, &metadata.to_string())?
            .into_iter()
            .next()
        else {
            continue;
        };
        let head = s3
            .head(&copy)
            .await
            .map_err(|f| Error::reading("HeadObject", copy.to_string(), f))?;
        found.requests += 1;
        if head.is_some() {
            let holder = copy.to_string();
            found
                .located
                .push(located(row, holder, head.as_ref(), &index, &manifest));
        }
    }
    Ok(found)
}

fn print_report(source: &str, query: &KeyQuery, report: &LocateReport) {
    let asked = match query {
        KeyQuery::Key(key) => format!("s3://{source}/{key}"),
        KeyQuery::Prefix(prefix) => format!("s3://{source}/{prefix}*"),
    };
    for located in &report.located {
        let version = located
            .version_id
            .as_deref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        println!("s3://{}/{}{version}", located.bucket, located.key);
        if located.copy {
            println!("  copy       {}", located.archive);
        } else {
            println!("  archive    {}", located.archive);
            println!(
                "  member     {} (header at {}, data at {})",
                located.member,
                located.header_offset.unwrap_or(0),
                located.data_offset.unwrap_or(0)
            );
        }
        println!(
            "  size       {} ({})",
            located.size,
            human_bytes(located.size)
        );
        println!("  modified   {}", located.last_modified);
        if let Some(archived) = &located.archived {
            println!("  archived   {archived}");
        }
        let class = located.storage_class.as_deref().unwrap_or("unknown");
        let restore = located.restore.as_deref().unwrap_or("unknown");
        let state = if located.needs_restore {
            "must be restored before it can be read"
        } else {
            "readable now"
        };
        println!("  class      {class}: {state} (restore: {restore})");
        if located.needs_restore {
            println!(
                "  restore    s3bundler restore {} --yes (without --yes: its cost and time)",
                located.archive
            );
        }
        println!("  index      {}", located.index);
    }
    for dead in &report.dead_lettered {
        println!(
            "s3://{}/{} is not archived: {} ({}) in {}",
            dead.bucket, dead.key, dead.reason, dead.detail, dead.dlq
        );
    }
    for manifest in &report.not_bundled {
        println!("{manifest} may list it but is not bundled yet");
    }
    if report.located.is_empty() && report.dead_lettered.is_empty() {
        println!("{asked}: not archived (no manifest in the catalog lists it)");
    }
    println!(
        "{} archived, {} dead-lettered; {} candidate manifests, {} requests",
        report.located.len(),
        report.dead_lettered.len(),
        report.candidates.len(),
        report.requests
    );
}
