//! Redrive (pure): which DLQ rows get another try, and the names of the manifests that give it.
//!
//! A family is a bundle manifest `ROOT.index` and its redrives `ROOT.redrive1.index`,
//! `ROOT.redrive2.index`, …: redrive N+1 lists the retryable DLQ rows of every member that no
//! later member lists yet. Their NAMEs (`ROOT.redriveN`) end in `redrive<N>`, which no name
//! `group` writes does (`….<N>`, `….<N>.glacier`), so their archives and indexes never share a
//! key with another manifest's.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::archive::records::{DlqReason, DlqRow};
use crate::manifest::ManifestEntry;
use crate::s3uri::S3Uri;

/// An object as manifests and DLQs name it: bucket, key, version.
pub type ObjectId = (String, String, Option<String>);

/// Reasons redriven unless `--reason` chooses: failures a later read can get past (a policy
/// fixed, throttling over, a restore done; `Glacier` rows only once their object is readable).
pub const DEFAULT_REASONS: [DlqReason; 3] = [
    DlqReason::Retry,
    DlqReason::AccessDenied,
    DlqReason::Glacier,
];

/// Why rows of `reason` are not redriven unless `--reason` chooses them.
pub fn why_not_by_default(reason: DlqReason) -> &'static str {
    match reason {
        DlqReason::NoSuchKey => {
            "deleted since the inventory: another read finds it gone again (a new object under \
             the key is the next inventory's)"
        }
        DlqReason::Changed => {
            "not the object the inventory listed: the next inventory lists it as it is now"
        }
        DlqReason::ChecksumMismatch => {
            "read twice with bytes that differ from its ETag: look at the object first"
        }
        DlqReason::SseC => "readable only with its customer-provided key, which s3bundler lacks",
        DlqReason::Unexpected => "an error s3bundler does not know: read its detail first",
        DlqReason::Retry | DlqReason::AccessDenied | DlqReason::Glacier => "not chosen by --reason",
    }
}

/// The family and level of a manifest key: `(ROOT.index, N)` for `ROOT.redriveN.index`,
/// `(key, 0)` for any other.
pub fn family_of(key: &str) -> (String, u32) {
    let level = key
        .strip_suffix(".index")
        .and_then(|stem| stem.rsplit_once(".redrive"))
        .and_then(|(root, n)| {
            // Only the name redrive_key writes: digits without a sign or a leading zero.
            let level: u32 = n.parse().ok()?;
            (level > 0 && level.to_string() == n).then(|| (format!("{root}.index"), level))
        });
    level.unwrap_or_else(|| (key.to_string(), 0))
}

/// The key of redrive `level` of the family whose first manifest is `root`.
pub fn redrive_key(root: &str, level: u32) -> String {
    let stem = root.strip_suffix(".index").unwrap_or(root);
    format!("{stem}.redrive{level}.index")
}

/// The manifests by family (keyed by the root's key), each family's members in level order.
pub fn families(manifests: &[S3Uri]) -> BTreeMap<String, Vec<(u32, S3Uri)>> {
    let mut families: BTreeMap<String, Vec<(u32, S3Uri)>> = BTreeMap::new();
    for uri in manifests {
        let (root, level) = family_of(&uri.key);
        families.entry(root).or_default().push((level, uri.clone()));
    }
    for members in families.values_mut() {
        members.sort_by_key(|(level, _)| *level);
    }
    families
}

/// For each manifest (by key), the members of its family that come after it: they list the
/// objects of its DLQ that were redriven.
pub fn later_members(manifests: &[S3Uri]) -> HashMap<String, Vec<S3Uri>> {
    let mut later = HashMap::new();
    for members in families(manifests).into_values() {
        for (i, (_, uri)) in members.iter().enumerate() {
            let after: Vec<S3Uri> = members[i + 1..].iter().map(|(_, u)| u.clone()).collect();
            later.insert(uri.key.clone(), after);
        }
    }
    later
}

/// The object a DLQ row names.
pub fn dlq_object(row: &DlqRow) -> ObjectId {
    (row.bucket.clone(), row.key.clone(), row.version_id.clone())
}

/// The object a manifest entry names.
pub fn entry_object(entry: &ManifestEntry<'_>) -> ObjectId {
    (
        entry.bucket.to_string(),
        entry.key.to_string(),
        entry.version_id.as_deref().map(str::to_string),
    )
}

/// The line of a redrive manifest for a DLQ row: the object as the inventory listed it (its
/// version, size and date), so that a changed object is caught as it was the first time.
pub fn entry_of(row: &DlqRow) -> ManifestEntry<'_> {
    ManifestEntry {
        bucket: Cow::Borrowed(&row.bucket),
        key: Cow::Borrowed(&row.key),
        size: row.size,
        version_id: row.version_id.as_deref().map(Cow::Borrowed),
        etag: None,
        last_modified: row.last_modified.as_deref().map(Cow::Borrowed),
        storage_class: None,
    }
}

/// What becomes of one DLQ row of the member at `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sorted {
    /// Goes into the next redrive (a `Glacier` row once its object is found readable).
    Redrive,
    /// A later member of its family lists it.
    AlreadyRedriven,
    /// Its reason is not chosen.
    NotChosen,
}

/// Sorts a DLQ row; `listed` gives, per object, the highest level of its family that lists it.
pub fn sort_row(
    row: &DlqRow,
    level: u32,
    listed: &HashMap<ObjectId, u32>,
    reasons: &[DlqReason],
) -> Sorted {
    if listed.get(&dlq_object(row)).is_some_and(|&at| at > level) {
        Sorted::AlreadyRedriven
    } else if reasons.contains(&row.reason) {
        Sorted::Redrive
    } else {
        Sorted::NotChosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::layout::manifest_name;

    #[test]
    fn redrive_names_round_trip_and_never_take_a_group_name() {
        let root = "out/src-cfg-2026-11-22T01-00Z-manifest.3.index";
        let first = redrive_key(root, 1);
        assert_eq!(
            first,
            "out/src-cfg-2026-11-22T01-00Z-manifest.3.redrive1.index"
        );
        assert_eq!(family_of(&first), (root.to_string(), 1));
        assert_eq!(family_of(&redrive_key(root, 12)), (root.to_string(), 12));
        assert_eq!(family_of(root), (root.to_string(), 0));
        // Names redrive_key never writes belong to no family but their own.
        for odd in ["a.redrive0.index", "a.redrive01.index", "a.redrive+1.index"] {
            assert_eq!(family_of(odd), (odd.to_string(), 0));
        }
        // Archives are named by NAME: a redrive's differs from its root's and from group's.
        assert_eq!(
            manifest_name(&first),
            "src-cfg-2026-11-22T01-00Z-manifest.3.redrive1"
        );
        assert_ne!(manifest_name(&first), manifest_name(root));
        let glacier = "out/m.3.glacier.index";
        assert_ne!(
            manifest_name(&redrive_key(glacier, 1)),
            manifest_name(glacier)
        );
    }

    #[test]
    fn rows_listed_by_a_later_member_are_already_redriven() {
        let rows = crate::archive::records::parse_dlq(
            b"bucket,key,version_id,size,last_modified,reason,detail\n\
              src,a,,1,,AccessDenied,\n\
              src,b,,1,,NoSuchKey,\n",
            "dlq",
        )
        .unwrap_or_default();
        let [denied, gone] = rows.as_slice() else {
            panic!("{rows:?}");
        };
        let listed = HashMap::from([(("src".to_string(), "a".to_string(), None), 1)]);
        let reasons = DEFAULT_REASONS;
        assert_eq!(
            sort_row(denied, 0, &listed, &reasons),
            Sorted::AlreadyRedriven
        );
        // Dead-lettered again by the redrive that listed it: the next redrive takes it.
        assert_eq!(sort_row(denied, 1, &listed, &reasons), Sorted::Redrive);
        assert_eq!(sort_row(gone, 0, &listed, &reasons), Sorted::NotChosen);
        assert_eq!(
            sort_row(gone, 0, &listed, &[DlqReason::NoSuchKey]),
            Sorted::Redrive
        );
    }
}
