//! Prune decisions (pure): which original objects verification proves safely archived, whether
//! each is still the object archived, and the counts `prune` reports. The S3 calls are in
//! `commands::prune`; the `.pruned` log format is in [`crate::archive::records`].

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::archive::records::{IndexRow, PrunedRow};
use crate::s3::ObjectHead;
use crate::verify::check::ManifestCheck;
use crate::verify::{Place, Status};

/// (bucket, key, version) of an object in a `.pruned` log.
pub type PrunedKey = (String, String, Option<String>);

pub fn pruned_key(row: &PrunedRow) -> PrunedKey {
    (row.bucket.clone(), row.key.clone(), row.version_id.clone())
}

fn index_key(row: &IndexRow) -> PrunedKey {
    (row.bucket.clone(), row.key.clone(), row.version_id.clone())
}

/// Why an object is kept without even looking at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum KeptReason {
    /// In the DLQ: never archived.
    InDlq,
    /// Missing, duplicated or mismatched.
    NotVerified,
    /// Its manifest's archive, index or copies failed verification.
    ArchiveDamaged,
    /// Changed since it was bundled.
    Changed,
}

impl std::fmt::Display for KeptReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What to do with one manifest object before looking at the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Triage<'a> {
    /// Verified: delete it if it is still the object archived (its index or copy row).
    Candidate(&'a IndexRow),
    /// The `.pruned` log says it was deleted already.
    AlreadyPruned,
    /// In the DLQ and listed by a redrive manifest: that manifest's check decides.
    Redriven,
    Kept(KeptReason),
}

/// Sorts a checked manifest's objects. A manifest whose archive is not sound keeps every
/// object; objects in a DLQ are always kept.
pub fn triage<'a>(check: &'a ManifestCheck, pruned: &HashSet<PrunedKey>) -> Vec<Triage<'a>> {
    check
        .statuses
        .iter()
        .map(|status| match status {
            Status::InDlq(_) => Triage::Kept(KeptReason::InDlq),
            Status::Redriven => Triage::Redriven,
            Status::Missing | Status::Duplicated(_) | Status::Mismatched(..) => {
                Triage::Kept(KeptReason::NotVerified)
            }
            Status::Verified(_) if !check.archive_sound => Triage::Kept(KeptReason::ArchiveDamaged),
            Status::Verified(place) => {
                let row = match *place {
                    Place::Index(i) => check.index.get(i),
                    Place::BigObject(i) => check.big.get(i).map(|c| &c.row),
                    Place::Dlq(_) => None,
                };
                match row {
                    Some(row) if pruned.contains(&index_key(row)) => Triage::AlreadyPruned,
                    Some(row) => Triage::Candidate(row),
                    None => Triage::Kept(KeptReason::NotVerified),
                }
            }
        })
        .collect()
}

/// What to do with a candidate once the source's current state is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delete this version (`None`: the current object, by key).
    Delete(Option<String>),
    /// The source no longer exists: nothing to delete.
    Gone,
    /// The source is not the object archived any more.
    Changed(String),
}

/// Compares the source's current state (`HeadObject` without a version) with what was
/// archived: the same version when one was recorded, else the same ETag and size.
pub fn decide(archived: &IndexRow, current: Option<&ObjectHead>) -> Decision {
    let Some(current) = current else {
        return Decision::Gone;
    };
    let etag = current.etag.as_deref().unwrap_or("").trim_matches('"');
    if let Some(version) = &archived.version_id {
        return if current.version_id.as_deref() == Some(version.as_str()) {
            Decision::Delete(Some(version.clone()))
        } else {
            Decision::Changed(format!(
                "the current version is {}, the archived one {version}",
                current.version_id.as_deref().unwrap_or("(none)")
            ))
        };
    }
    let archived_etag = archived.etag.trim_matches('"');
    if etag.eq_ignore_ascii_case(archived_etag) && current.size == archived.size {
        Decision::Delete(None)
    } else {
        Decision::Changed(format!(
            "now {} bytes with ETag {etag}, archived {} bytes with ETag {archived_etag}",
            current.size, archived.size
        ))
    }
}

/// `bucket/first-folder/` of a key, for the dry run's per-prefix counts.
pub fn prefix_of(bucket: &str, key: &str) -> String {
    match key.find('/') {
        Some(slash) => format!("{bucket}/{}", &key[..=slash]),
        None => format!("{bucket}/"),
    }
}

/// Objects and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub objects: u64,
    pub bytes: u64,
}

impl Tally {
    pub fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }
}

/// What `prune` did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PruneSummary {
    pub dry_run: bool,
    pub manifests: u64,
    /// Deleted, or to delete in a dry run.
    pub deleted: Tally,
    /// Per `bucket/first-folder/`.
    pub by_prefix: BTreeMap<String, Tally>,
    pub already_pruned: u64,
    pub already_gone: u64,
    pub kept: BTreeMap<KeptReason, u64>,
    /// Deletions S3 refused, per key.
    pub errors: u64,
    pub elapsed_seconds: f64,
}

impl PruneSummary {
    pub fn delete(&mut self, row: &IndexRow) {
        self.deleted.add(row.size);
        self.by_prefix
            .entry(prefix_of(&row.bucket, &row.key))
            .or_default()
            .add(row.size);
    }

    pub fn keep(&mut self, reason: KeptReason) {
        *self.kept.entry(reason).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::archive::records::DlqReason;
    use crate::manifest::ManifestEntry;
    use crate::verify::BigCopy;

    fn row(key: &str, version: Option<&str>) -> IndexRow {
        IndexRow {
            bucket: "src".into(),
            key: key.into(),
            version_id: version.map(str::to_string),
            size: 5,
            etag: "abc".into(),
            ..IndexRow::default()
        }
    }

    fn head(version: Option<&str>, etag: &str, size: u64) -> ObjectHead {
        ObjectHead {
            size,
            etag: Some(format!("\"{etag}\"")),
            version_id: version.map(str::to_string),
            last_modified: None,
            opaque_etag: false,
            metadata: Default::default(),
            storage_class: None,
            cold: false,
            restore: None,
            archive_status: None,
        }
    }

    #[test]
    fn only_the_object_archived_is_deleted() {
        let plain = row("k", None);
        assert_eq!(decide(&plain, None), Decision::Gone);
        assert_eq!(
            decide(&plain, Some(&head(None, "ABC", 5))),
            Decision::Delete(None)
        );
        assert!(matches!(
            decide(&plain, Some(&head(None, "abd", 5))),
            Decision::Changed(_)
        ));
        assert!(matches!(
            decide(&plain, Some(&head(None, "abc", 6))),
            Decision::Changed(_)
        ));
        let versioned = row("k", Some("v1"));
        assert_eq!(
            decide(&versioned, Some(&head(Some("v1"), "abc", 5))),
            Decision::Delete(Some("v1".into()))
        );
        // Overwritten since: same bytes or not, a newer version is not the one archived.
        assert!(matches!(
            decide(&versioned, Some(&head(Some("v2"), "abc", 5))),
            Decision::Changed(d) if d.contains("v2")
        ));
        assert!(matches!(
            decide(&versioned, Some(&head(None, "abc", 5))),
            Decision::Changed(_)
        ));
    }

    fn entry(key: &str) -> ManifestEntry<'static> {
        ManifestEntry {
            bucket: Cow::Borrowed("src"),
            key: Cow::Owned(key.into()),
            size: 5,
            version_id: None,
            etag: None,
            last_modified: None,
            storage_class: None,
        }
    }

    #[test]
    fn triage_keeps_dlq_unverified_and_damaged_and_skips_the_log() {
        let mut check = ManifestCheck {
            entries: ["a", "b", "c", "d", "e"].into_iter().map(entry).collect(),
            index: vec![row("a", None), row("b", Some("v"))],
            big: vec![BigCopy {
                row: row("e", None),
                problem: None,
            }],
            statuses: vec![
                Status::Verified(Place::Index(0)),
                Status::Verified(Place::Index(1)),
                Status::InDlq(DlqReason::Glacier),
                Status::Missing,
                Status::Verified(Place::BigObject(0)),
            ],
            archive_sound: true,
            ..ManifestCheck::default()
        };
        let pruned = HashSet::from([("src".to_string(), "b".to_string(), Some("v".to_string()))]);
        let sorted = triage(&check, &pruned);
        assert_eq!(sorted[0], Triage::Candidate(&check.index[0]));
        assert_eq!(sorted[1], Triage::AlreadyPruned);
        assert_eq!(sorted[2], Triage::Kept(KeptReason::InDlq));
        assert_eq!(sorted[3], Triage::Kept(KeptReason::NotVerified));
        assert_eq!(sorted[4], Triage::Candidate(&check.big[0].row));
        check.archive_sound = false;
        let damaged = triage(&check, &HashSet::new());
        assert_eq!(damaged[0], Triage::Kept(KeptReason::ArchiveDamaged));
        assert_eq!(damaged[4], Triage::Kept(KeptReason::ArchiveDamaged));
        assert_eq!(damaged[2], Triage::Kept(KeptReason::InDlq));
    }

    #[test]
    fn summary_counts_by_prefix() {
        assert_eq!(prefix_of("b", "logs/2026/x"), "b/logs/");
        assert_eq!(prefix_of("b", "top"), "b/");
        let mut summary = PruneSummary::default();
        summary.delete(&row("logs/a", None));
        summary.delete(&row("logs/b", None));
        summary.delete(&row("top", None));
        summary.keep(KeptReason::Changed);
        assert_eq!(
            summary.deleted,
            Tally {
                objects: 3,
                bytes: 15
            }
        );
        assert_eq!(summary.by_prefix["src/logs/"].objects, 2);
        assert_eq!(summary.kept[&KeptReason::Changed], 1);
        let json = serde_json::to_value(&summary).unwrap_or_default();
        assert_eq!(json["kept"]["Changed"], 1);
    }
}
