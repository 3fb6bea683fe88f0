//! The commit protocol (SPEC "Commit order" and "Write-once records"), in one place.
//!
//! A manifest's records are its archive, its DLQ and its index. They are committed in this
//! order: archive completed, DLQ written (when it has rows), index written last as the commit
//! marker; a DLQ that lists every object of the manifest is the marker when nothing could be
//! archived. Every record is written once: PutObject and CompleteMultipartUpload carry
//! `If-None-Match: *`, so no second writer (a re-run, a redelivered message, a stalled worker
//! that lost its lease) can replace a record. A refused write is checked against the writer's
//! own identity, since a retry whose first answer was lost finds its own record there.
//! Every record names the manifest it belongs to, so two manifests that would share an
//! archive key are refused before either writes. What an attempt left without committing (an
//! archive, a DLQ that is not final) is removed by the next lease holder, conditional on its
//! ETag; nothing committed is ever removed.

use std::collections::BTreeMap;

use aws_sdk_s3::types::CompletedPart;
use bytes::Bytes;
use tracing::{info, warn};

use super::lease::Lease;
use super::upload::{complete_upload, Completed};
use super::writer::FinishedArchive;
use super::{BundleReport, Outputs};
use crate::archive::layout::BundleLayout;
use crate::archive::records::dlq_rows;
use crate::error::{Error, RemoteFailure, Result};
use crate::key_encoding::encode_key;
use crate::reading::RowStream;
use crate::s3::{ObjectHead, Put, S3};
use crate::s3uri::S3Uri;

/// User metadata of an index: the ETag and version of the archive it describes, so that
/// `verify` can prove they belong together.
pub const ARCHIVE_ETAG_METADATA: &str = "s3bundler-archive-etag";
pub const ARCHIVE_VERSION_METADATA: &str = "s3bundler-archive-version-id";
/// User metadata of an index put whole: the archive's size in bytes and the class it was
/// written in. With the ETag, S3's check of every part's CRC as it landed and the MD5 of every
/// member computed as it streamed, they prove a cold archive by a HEAD, without reading it.
pub const ARCHIVE_SIZE_METADATA: &str = "s3bundler-archive-size";
pub const ARCHIVE_CLASS_METADATA: &str = "s3bundler-archive-storage-class";
/// User metadata of a DLQ that is its manifest's only output (every object failed), when it
/// was put whole. A DLQ uploaded in parts cannot get it (a multipart upload's metadata is fixed
/// when it starts): it is final when it lists every object of its manifest.
pub const DLQ_FINAL_METADATA: &str = "s3bundler-final";
/// User metadata of every record: a random id of the attempt that wrote it. An index too big
/// to be put whole is uploaded before its archive's ETag is known, so this is what proves that
/// an index and an archive belong together, and what a writer recognises as its own.
pub const ATTEMPT_METADATA: &str = "s3bundler-attempt";
/// User metadata of every record: the manifest it belongs to (`s3://BUCKET/KEY`, the key
/// URL-encoded as in a manifest, since metadata values are ASCII).
pub const MANIFEST_METADATA: &str = "s3bundler-manifest";
/// User metadata of every record: the ETag of the manifest it was bundled from.
pub const MANIFEST_ETAG_METADATA: &str = "s3bundler-manifest-etag";

/// Where one manifest's records go.
pub(super) struct Places {
    pub archive: S3Uri,
    pub index: S3Uri,
    pub dlq: S3Uri,
    pub manifest: S3Uri,
}

impl Places {
    pub fn new(archive_bucket: &str, manifest: &S3Uri, layout: &BundleLayout) -> Self {
        Places {
            archive: S3Uri::new(archive_bucket, layout.archive_key.clone()),
            index: S3Uri::new(archive_bucket, layout.index_key.clone()),
            dlq: S3Uri::new(manifest.bucket.clone(), layout.dlq_key.clone()),
            manifest: manifest.clone(),
        }
    }

    /// Beside the manifest, like its DLQ: one manifest, one lease, and nothing but the
    /// record of the archives under the archive prefix.
    pub fn lease(&self) -> S3Uri {
        S3Uri::new(
            self.manifest.bucket.clone(),
            format!("{}.lease", self.manifest.key),
        )
    }
}

/// How a manifest is named in its records' metadata.
pub fn manifest_tag(manifest: &S3Uri) -> String {
    format!("s3://{}/{}", manifest.bucket, encode_key(&manifest.key))
}

/// What marks a record as written by one writer: user metadata entries it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity(BTreeMap<String, String>);

impl Identity {
    pub fn new(entries: impl IntoIterator<Item = (String, String)>) -> Self {
        Identity(entries.into_iter().collect())
    }

    /// Its entries, to write on a record.
    pub fn entries(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone()))
    }

    /// True when `metadata` carries every entry of this identity.
    pub fn is_on(&self, metadata: &BTreeMap<String, String>) -> bool {
        self.0
            .iter()
            .all(|(name, value)| metadata.get(name) == Some(value))
    }
}

/// The attempt at a manifest that writes its records.
pub(super) struct Attempt {
    id: String,
    manifest: S3Uri,
    manifest_etag: Option<String>,
}

impl Attempt {
    pub fn new(manifest: &S3Uri, manifest_etag: Option<&str>) -> Self {
        Attempt {
            id: format!("{:016x}", fastrand::u64(..)),
            manifest: manifest.clone(),
            manifest_etag: manifest_etag.map(|etag| etag.trim_matches('"').to_string()),
        }
    }

    /// What every record of this attempt carries: the attempt, and the manifest it belongs to.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut metadata = BTreeMap::from([
            (ATTEMPT_METADATA.to_string(), self.id.clone()),
            (MANIFEST_METADATA.to_string(), manifest_tag(&self.manifest)),
        ]);
        if let Some(etag) = &self.manifest_etag {
            metadata.insert(MANIFEST_ETAG_METADATA.to_string(), etag.clone());
        }
        metadata
    }

    pub fn identity(&self) -> Identity {
        Identity::new([(ATTEMPT_METADATA.to_string(), self.id.clone())])
    }
}

/// After a conditional write was refused (412), or its upload was gone (404: a retry whose
/// first try had completed it): the object there is this writer's if it carries `mine`;
/// otherwise another writer's, and this one lost ([`Error::Superseded`]).
async fn settle_refused(
    s3: &S3,
    target: &S3Uri,
    mine: &Identity,
    operation: &'static str,
    refused: RemoteFailure,
) -> Result<Completed> {
    let head = s3
        .head(target)
        .await
        .map_err(|f| Error::reading("HeadObject", target.to_string(), f))?;
    match head {
        Some(head) if mine.is_on(&head.metadata) => Ok(Completed {
            etag: head.etag,
            version_id: head.version_id,
        }),
        Some(_) => Err(Error::Superseded {
            record: target.to_string(),
        }),
        None => Err(Error::writing(operation, target.to_string(), refused)),
    }
}

fn refused_write(error: &Error) -> Option<RemoteFailure> {
    match error {
        Error::Write {
            failure: failure @ (RemoteFailure::PreconditionFailed | RemoteFailure::NotFound),
            ..
        } => Some(failure.clone()),
        _ => None,
    }
}

/// Completes a multipart upload only where no object is yet (`If-None-Match: *`); see
/// [`settle_refused`] for a refusal.
pub async fn complete_once(
    s3: &S3,
    target: &S3Uri,
    upload_id: &str,
    parts: Vec<CompletedPart>,
    mine: &Identity,
) -> Result<Completed> {
    match complete_upload(s3, target, upload_id, parts, (None, true)).await {
        Ok(output) => Ok(Completed {
            etag: output.e_tag().map(str::to_string),
            version_id: output.version_id().map(str::to_string),
        }),
        Err(error) => match refused_write(&error) {
            Some(refused) => {
                settle_refused(s3, target, mine, "CompleteMultipartUpload", refused).await
            }
            None => Err(error),
        },
    }
}

/// Puts an object only where no object is yet (`If-None-Match: *`); see [`settle_refused`]
/// for a refusal.
pub async fn put_once(
    s3: &S3,
    target: &S3Uri,
    body: Bytes,
    put: Put,
    mine: &Identity,
) -> Result<Completed> {
    let put = Put {
        if_none_match: true,
        if_match: None,
        ..put
    };
    match s3.put(target, body, &put).await {
        Ok(etag) => Ok(Completed {
            etag,
            version_id: None,
        }),
        Err(refused @ RemoteFailure::PreconditionFailed) => {
            settle_refused(s3, target, mine, "PutObject", refused).await
        }
        Err(failure) => Err(Error::writing("PutObject", target.to_string(), failure)),
    }
}

/// A record an attempt left without committing: removed, only while it is what was found.
#[derive(Debug, Clone)]
pub(super) struct Leftover {
    uri: S3Uri,
    etag: String,
}

/// A manifest's records as found.
pub(super) enum State {
    /// Committed: its index, or its final DLQ. Nothing of it is ever written again.
    Committed(S3Uri),
    /// Not committed; what attempts that stopped left behind.
    Open(Vec<Leftover>),
}

/// What the manifest's records say. Reads the index, the DLQ and the archive at once. A record
/// that belongs to another manifest (two manifests with one name) is refused: nothing of this
/// manifest is written over it.
pub(super) async fn inspect(
    s3: &S3,
    places: &Places,
    manifest_etag: Option<&str>,
    entries: u64,
) -> Result<State> {
    let head = |uri: &S3Uri| {
        let uri = uri.clone();
        async move {
            s3.head(&uri)
                .await
                .map(|found| found.map(|head| (uri.clone(), head)))
                .map_err(|failure| Error::reading("HeadObject", uri.to_string(), failure))
        }
    };
    let (index, dlq, archive) = tokio::try_join!(
        head(&places.index),
        head(&places.dlq),
        head(&places.archive)
    )?;
    if let Some((uri, head)) = index {
        check_owner(places, &uri, &head)?;
        warn_if_changed(places, &uri, &head, manifest_etag);
        return Ok(State::Committed(uri));
    }
    let mut leftovers = Vec::new();
    if let Some((uri, head)) = dlq {
        if is_final_dlq(s3, &uri, &head, entries).await? {
            warn_if_changed(places, &uri, &head, manifest_etag);
            return Ok(State::Committed(uri));
        }
        leftovers.push(Leftover::of(uri, &head));
    }
    if let Some((uri, head)) = archive {
        check_owner(places, &uri, &head)?;
        leftovers.push(Leftover::of(uri, &head));
    }
    Ok(State::Open(leftovers))
}

impl Leftover {
    fn of(uri: S3Uri, head: &ObjectHead) -> Self {
        Leftover {
            uri,
            etag: head.etag.clone().unwrap_or_default(),
        }
    }
}

/// Fails when `head`, a record at one of this manifest's places, names another manifest.
/// Records written before they named their manifest are taken as this manifest's.
fn check_owner(places: &Places, uri: &S3Uri, head: &ObjectHead) -> Result<()> {
    match head.metadata.get(MANIFEST_METADATA) {
        Some(owner) if *owner != manifest_tag(&places.manifest) => Err(Error::Collision {
            manifest: places.manifest.to_string(),
            record: uri.to_string(),
            owner: owner.clone(),
        }),
        _ => Ok(()),
    }
}

/// A manifest rewritten after its commit is not bundled again (its records are final): says
/// so, and where the objects it now lists can go.
fn warn_if_changed(places: &Places, marker: &S3Uri, head: &ObjectHead, etag: Option<&str>) {
    let recorded = head.metadata.get(MANIFEST_ETAG_METADATA);
    let current = etag.map(|e| e.trim_matches('"'));
    if let (Some(recorded), Some(current)) = (recorded, current) {
        if recorded != current {
            warn!(
                "{} changed after it was bundled ({marker} records ETag {recorded}, it is now \
                 {current}); committed records are never replaced, so it is not bundled again: \
                 put the objects that still need an archive in a manifest with a new name",
                places.manifest
            );
        }
    }
}

/// A DLQ is final (its manifest's commit marker) when it says so, or when it lists every
/// object of the manifest: a DLQ is only ever completed by a commit, and one that lists every
/// object has no index to wait for.
pub async fn is_final_dlq(s3: &S3, uri: &S3Uri, head: &ObjectHead, entries: u64) -> Result<bool> {
    if head.metadata.contains_key(DLQ_FINAL_METADATA) {
        return Ok(true);
    }
    let got = s3
        .get_stream(uri)
        .await
        .map_err(|f| Error::reading("GetObject", uri.to_string(), f))?;
    let location = uri.to_string();
    let mut rows = RowStream::start(s3, uri, got, move |reader| dlq_rows(reader, &location));
    let mut count = 0u64;
    while let Some(row) = rows.next().await {
        if row.is_err() {
            // Damaged: not a record anyone can rely on.
            return Ok(false);
        }
        count += 1;
        if count > entries {
            return Ok(false);
        }
    }
    Ok(count == entries)
}

/// Removes what attempts that stopped left, each only while it is the object that was found
/// (If-Match): the lease holder's first step before it writes anything.
pub(super) async fn remove_leftovers(s3: &S3, leftovers: &[Leftover]) -> Result<()> {
    for leftover in leftovers {
        match s3
            .delete_if(
                &leftover.uri,
                Some(leftover.etag.as_str()).filter(|e| !e.is_empty()),
            )
            .await
        {
            Ok(()) | Err(RemoteFailure::NotFound) => {
                info!(
                    "removed {} left by an attempt that did not commit",
                    leftover.uri
                );
            }
            Err(RemoteFailure::PreconditionFailed) => {
                return Err(Error::Superseded {
                    record: leftover.uri.to_string(),
                })
            }
            Err(failure) => {
                return Err(Error::writing(
                    "DeleteObject",
                    leftover.uri.to_string(),
                    failure,
                ))
            }
        }
    }
    Ok(())
}

/// Removes a record this attempt wrote but did not commit (another writer won a later step),
/// only while it is still this attempt's. Best effort: the next lease holder removes it too.
pub(super) async fn withdraw(s3: &S3, uri: &S3Uri, completed: &Completed) {
    let Some(etag) = completed.etag.as_deref() else {
        return;
    };
    if let Err(failure) = s3.delete_if(uri, Some(etag)).await {
        warn!("could not remove {uri}, which this attempt did not commit: {failure}");
    }
}

/// The commit, in the order that never loses a record: the archive is complete; now the DLQ,
/// then the index, the commit marker, last. A step refused because another writer's record is
/// there ends the commit, and what this attempt wrote is withdrawn.
pub(super) async fn commit(
    s3: &S3,
    places: &Places,
    lease: &Lease,
    outputs: &mut Outputs,
    finished: Option<FinishedArchive>,
    mine: &Identity,
) -> Result<BundleReport> {
    let mut report = outputs.tally.report.clone();
    let writes_index = report.objects_archived + report.objects_copied > 0;
    if let Some(archive) = &finished {
        report.archive = Some(places.archive.to_string());
        report.archive_bytes = archive.tar_bytes;
    }
    let withdraw_archive = || async {
        if let Some(archive) = &finished {
            withdraw(s3, &places.archive, &archive.completed).await;
        }
    };
    lease.ensure_held()?;
    let mut dlq_written = None;
    if outputs.dlq.rows() > 0 {
        let mut late = BTreeMap::new();
        if !writes_index {
            late.insert(DLQ_FINAL_METADATA.to_string(), "true".to_string());
        }
        match outputs.dlq.commit(late, mine).await {
            Ok(completed) => dlq_written = Some(completed),
            Err(error) => {
                withdraw_archive().await;
                return Err(error);
            }
        }
        report.dlq = Some(places.dlq.to_string());
    }
    if writes_index {
        let mut claim = BTreeMap::new();
        if let Some(archive) = &finished {
            let etag = archive.completed.etag.as_deref().unwrap_or_default();
            claim.insert(
                ARCHIVE_ETAG_METADATA.to_string(),
                etag.trim_matches('"').to_string(),
            );
            if let Some(version) = &archive.completed.version_id {
                claim.insert(ARCHIVE_VERSION_METADATA.to_string(), version.clone());
            }
            claim.insert(
                ARCHIVE_SIZE_METADATA.to_string(),
                archive.object_bytes.to_string(),
            );
            let class = archive
                .storage_class
                .as_ref()
                .map_or("STANDARD", |c| c.as_str());
            claim.insert(ARCHIVE_CLASS_METADATA.to_string(), class.to_string());
        }
        // An index uploaded in parts carries the attempt id alone, which its archive has too.
        let committed = match lease.ensure_held() {
            Ok(()) => outputs.index.commit(claim, mine).await,
            Err(error) => Err(error),
        };
        if let Err(error) = committed {
            withdraw_archive().await;
            if let Some(dlq) = &dlq_written {
                withdraw(s3, &places.dlq, dlq).await;
            }
            return Err(error);
        }
        report.index = Some(places.index.to_string());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_on_metadata_that_carries_all_of_it() {
        let mine = Identity::new([("a".to_string(), "1".to_string())]);
        let metadata = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(mine.is_on(&metadata(&[("a", "1"), ("b", "2")])));
        assert!(!mine.is_on(&metadata(&[("a", "2")])));
        assert!(!mine.is_on(&metadata(&[])));
    }

    #[test]
    fn records_name_their_manifest_in_ascii() {
        let tag = manifest_tag(&S3Uri::new("m", "dir/é x.0.index"));
        assert!(tag.is_ascii(), "{tag}");
        assert_eq!(tag, "s3://m/dir/%C3%A9+x.0.index");
        let attempt = Attempt::new(&S3Uri::new("m", "k"), Some("\"abc\""));
        let metadata = attempt.metadata();
        assert_eq!(
            metadata.get(MANIFEST_ETAG_METADATA).map(String::as_str),
            Some("abc")
        );
        assert!(attempt.identity().is_on(&metadata));
    }
}
