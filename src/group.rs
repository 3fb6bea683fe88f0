//! Grouping: which inventory rows are bundled (selection) and how they are cut into bundle
//! manifests (splitting). Pure functions over rows.

use std::borrow::Cow;
use std::fmt;

use crate::inventory::ordered::RowBatch;
use crate::inventory::InventoryRow;
use crate::manifest::{write_line, ManifestEntry, ManifestWriter};

/// Why a row was not selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    DeleteMarker,
    /// A noncurrent version, without `--all-versions`.
    NotLatest,
    /// The key does not start with `-i PREFIX`.
    OutsidePrefix,
    /// GLACIER, DEEP_ARCHIVE or an Intelligent-Tiering archive tier: unreadable without a restore.
    NeedsRestore,
    /// With `-g`: an object that is not in an archive class.
    NotArchived,
    /// Modified before the window of the latest earlier inventory grouped: grouped then.
    AlreadyGrouped,
    /// Inside that window, and listed in its state as grouped.
    AlreadyGroupedInMargin,
}

impl SkipReason {
    pub const ALL: [SkipReason; 7] = [
        SkipReason::DeleteMarker,
        SkipReason::NotLatest,
        SkipReason::OutsidePrefix,
        SkipReason::NeedsRestore,
        SkipReason::NotArchived,
        SkipReason::AlreadyGrouped,
        SkipReason::AlreadyGroupedInMargin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::DeleteMarker => "delete_marker",
            SkipReason::NotLatest => "noncurrent_version",
            SkipReason::OutsidePrefix => "outside_prefix",
            SkipReason::NeedsRestore => "archived_needs_restore",
            SkipReason::NotArchived => "not_archived",
            SkipReason::AlreadyGrouped => "already_grouped",
            SkipReason::AlreadyGroupedInMargin => "already_grouped_in_margin",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True for objects that cannot be read without a restore.
pub fn needs_restore(storage_class: Option<&str>, access_tier: Option<&str>) -> bool {
    matches!(storage_class, Some("GLACIER" | "DEEP_ARCHIVE"))
        || matches!(
            access_tier,
            Some("ARCHIVE_ACCESS" | "DEEP_ARCHIVE_ACCESS" | "ARCHIVE_CONFIGURATION")
        )
}

/// The selection rules of `group`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// `-i PREFIX`: keep only keys (decoded) that start with it.
    pub include_prefix: Option<String>,
    /// `--all-versions`: keep noncurrent versions too.
    pub all_versions: bool,
    /// `-g`: select only objects that need a restore.
    pub glacier: bool,
}

impl Selection {
    pub fn check(&self, row: &InventoryRow<'_>) -> Result<(), SkipReason> {
        if row.is_delete_marker {
            return Err(SkipReason::DeleteMarker);
        }
        if !self.all_versions && row.is_latest == Some(false) {
            return Err(SkipReason::NotLatest);
        }
        if let Some(prefix) = &self.include_prefix {
            if !row.key.starts_with(prefix.as_str()) {
                return Err(SkipReason::OutsidePrefix);
            }
        }
        match (
            needs_restore(row.storage_class, row.intelligent_tiering_access_tier),
            self.glacier,
        ) {
            (true, false) => Err(SkipReason::NeedsRestore),
            (false, true) => Err(SkipReason::NotArchived),
            _ => Ok(()),
        }
    }
}

/// Incremental grouping: what the latest earlier inventory grouped, and what this one must
/// remember for the next. S3 Inventory is eventually consistent, so an object modified shortly
/// before an inventory may be missing from it: every selected row modified within `--margin`
/// of an inventory's creation is remembered by fingerprint, and the next inventory selects a
/// row of that window unless it is remembered.
#[derive(Debug, Default)]
pub struct Increment {
    /// The latest earlier inventory's window and the rows of it that were grouped.
    pub earlier: Option<EarlierWindow>,
    /// Where this inventory's window starts (ms since the epoch): selected rows modified from
    /// then on, or of unknown date, are remembered. `None`: nothing is remembered.
    pub window_start: Option<i64>,
}

/// The window of an earlier grouped inventory, from its state object.
#[derive(Debug, Default)]
pub struct EarlierWindow {
    /// Rows modified before this (ms since the epoch) were in that inventory, so grouped.
    pub start: i64,
    /// Fingerprints of the selected rows at or after `start` (or of unknown date).
    pub grouped: std::collections::HashSet<u128>,
}

impl Increment {
    /// For a row the selection kept: whether an earlier run grouped it, and its fingerprint
    /// when this run must remember it.
    pub fn check(&self, row: &InventoryRow<'_>) -> (Result<(), SkipReason>, Option<u128>) {
        let modified = row.last_modified.and_then(millis_since_epoch);
        // Without a date a row is always in the window: never assumed to be grouped.
        let in_window = |start: i64| modified.is_none_or(|m| m >= start);
        let remembered = self.window_start.is_some_and(in_window);
        let earlier_lists = self.earlier.as_ref().filter(|e| in_window(e.start));
        let fingerprint = (remembered || earlier_lists.is_some()).then(|| fingerprint(row));
        let verdict = match (&self.earlier, earlier_lists, fingerprint) {
            (None, _, _) => Ok(()),
            (Some(_), None, _) => Err(SkipReason::AlreadyGrouped),
            (Some(_), Some(earlier), Some(print)) if earlier.grouped.contains(&print) => {
                Err(SkipReason::AlreadyGroupedInMargin)
            }
            (Some(_), Some(_), _) => Ok(()),
        };
        (verdict, fingerprint.filter(|_| remembered))
    }
}

/// An inventory's `LastModifiedDate` (`2026-11-22T01:00:00.000Z`) in ms since the epoch.
pub fn millis_since_epoch(text: &str) -> Option<i64> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let time = DateTime::from_str(text, Format::DateTime).ok()?;
    time.to_millis().ok()
}

/// What identifies one version of an object in an inventory: its key, version, ETag, date
/// and size. A changed object differs in at least its date.
pub fn fingerprint(row: &InventoryRow<'_>) -> u128 {
    use md5::{Digest, Md5};
    let mut hash = Md5::new();
    for field in [
        row.key.as_ref(),
        version_for(row).unwrap_or(""),
        row.etag.unwrap_or(""),
        row.last_modified.unwrap_or(""),
    ] {
        hash.update(field.as_bytes());
        hash.update([0]);
    }
    hash.update(row.size.unwrap_or(0).to_le_bytes());
    u128::from_be_bytes(hash.finalize().into())
}

/// The version id S3 gives an object written while the bucket was unversioned (or versioning
/// suspended). Inventory reports leave it empty; GET, HEAD, GetObjectTagging and CopySource
/// accept it as `versionId=null`.
pub const NULL_VERSION: &str = "null";

/// The version a manifest entry names for `row`. A noncurrent row with an empty VersionId is the
/// null version: without a version id, `bundle` would read the current object instead, a
/// different one. A current row without one is read as the current object, as before.
fn version_for<'a>(row: &InventoryRow<'a>) -> Option<&'a str> {
    match (row.version_id, row.is_latest) {
        (None, Some(false)) => Some(NULL_VERSION),
        (version, _) => version,
    }
}

/// The manifest entry for a selected row.
pub fn entry_for<'a>(row: &'a InventoryRow<'a>) -> ManifestEntry<'a> {
    ManifestEntry {
        bucket: Cow::Borrowed(row.bucket),
        key: Cow::Borrowed(row.key.as_ref()),
        size: row.size.unwrap_or(0),
        version_id: version_for(row).map(Cow::Borrowed),
        etag: row.etag.map(Cow::Borrowed),
        last_modified: row.last_modified.map(Cow::Borrowed),
        storage_class: row.storage_class.map(Cow::Borrowed),
    }
}

/// A finished bundle manifest, numbered from 0 in inventory order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedManifest {
    pub number: u64,
    pub body: Vec<u8>,
    pub objects: u64,
    pub bytes: u64,
}

/// Cuts selected rows into manifests: the current manifest is closed as soon as its object count
/// reaches the count threshold or its total size reaches the size threshold.
pub struct Splitter {
    count_threshold: u64,
    size_threshold: u64,
    current: ManifestWriter,
    next_number: u64,
}

impl Splitter {
    pub fn new(count_threshold: u64, size_threshold: u64) -> Self {
        Splitter {
            count_threshold: count_threshold.max(1),
            size_threshold: size_threshold.max(1),
            current: ManifestWriter::default(),
            next_number: 0,
        }
    }

    /// Adds an entry; returns the manifest it closed, if any.
    pub fn push(&mut self, entry: &ManifestEntry<'_>) -> Option<ClosedManifest> {
        self.current.push(entry);
        self.close_if_full()
    }

    /// Adds a line written by [`write_line`]; returns the manifest it closed, if any.
    pub fn push_line(&mut self, line: &[u8], size: u64) -> Option<ClosedManifest> {
        self.current.push_line(line, size);
        self.close_if_full()
    }

    fn close_if_full(&mut self) -> Option<ClosedManifest> {
        if self.current.objects() >= self.count_threshold
            || self.current.bytes() >= self.size_threshold
        {
            Some(self.close())
        } else {
            None
        }
    }

    /// The last, partial manifest; `None` when it would be empty.
    pub fn finish(mut self) -> Option<ClosedManifest> {
        (self.current.objects() > 0).then(|| self.close())
    }

    fn close(&mut self) -> ClosedManifest {
        let writer = std::mem::take(&mut self.current);
        let (objects, bytes) = (writer.objects(), writer.bytes());
        let number = self.next_number;
        self.next_number += 1;
        ClosedManifest {
            number,
            body: writer.finish(),
            objects,
            bytes,
        }
    }
}

/// What grouping saw and did, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupStats {
    pub rows_seen: u64,
    pub objects_selected: u64,
    pub bytes_selected: u64,
    pub skipped: std::collections::BTreeMap<&'static str, u64>,
    /// Skipped because an earlier run grouped them (both `already_grouped` reasons).
    pub objects_already_grouped: u64,
    pub bytes_already_grouped: u64,
    pub manifests_written: u64,
    pub manifests_unchanged: u64,
}

impl GroupStats {
    /// Adds what one batch of rows counted.
    pub fn add(&mut self, tally: &Tally) {
        self.rows_seen += tally.rows_seen;
        self.objects_selected += tally.objects_selected;
        self.bytes_selected += tally.bytes_selected;
        self.bytes_already_grouped += tally.bytes_already_grouped;
        self.objects_already_grouped += tally.skipped[SkipReason::AlreadyGrouped as usize]
            + tally.skipped[SkipReason::AlreadyGroupedInMargin as usize];
        for (reason, &count) in SkipReason::ALL.iter().zip(&tally.skipped) {
            if count > 0 {
                *self.skipped.entry(reason.as_str()).or_default() += count;
            }
        }
    }
}

/// Counts of one batch of rows; cheaper to update per row than [`GroupStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub rows_seen: u64,
    pub objects_selected: u64,
    pub bytes_selected: u64,
    pub bytes_already_grouped: u64,
    /// By [`SkipReason::ALL`] order.
    pub skipped: [u64; SkipReason::ALL.len()],
}

/// Lines written per batch: large enough that handing a batch between threads costs nothing
/// per row, small enough that a few batches in flight per data file stay around a MiB.
const BATCH_LINE_BYTES: usize = 1 << 20;
const BATCH_ROWS: u64 = 1 << 16;

/// The selected rows of a stretch of one data file, already written as manifest lines. Reader
/// threads fill batches in parallel; the splitter takes them in inventory order, so the
/// manifests do not depend on which thread was faster.
pub struct SelectedRows {
    selection: std::sync::Arc<Selection>,
    increment: std::sync::Arc<Increment>,
    lines: Vec<u8>,
    /// End of each line in `lines`, and its object's size.
    ends: Vec<(usize, u64)>,
    /// Fingerprints of the rows in this inventory's window (see [`Increment`]).
    pub window: Vec<u128>,
    pub tally: Tally,
}

impl SelectedRows {
    pub fn new(selection: std::sync::Arc<Selection>, increment: std::sync::Arc<Increment>) -> Self {
        SelectedRows {
            selection,
            increment,
            lines: Vec::with_capacity(BATCH_LINE_BYTES + 4096),
            ends: Vec::new(),
            window: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Each selected line with its object's size, in row order.
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(end, _)| end));
        starts
            .zip(&self.ends)
            .map(|(start, &(end, size))| (&self.lines[start..end], size))
    }
}

impl RowBatch for SelectedRows {
    /// Counts `row`, and writes its manifest line when it is selected.
    fn add(&mut self, row: &InventoryRow<'_>) {
        self.tally.rows_seen += 1;
        let size = row.size.unwrap_or(0);
        let verdict = self.selection.check(row).and_then(|()| {
            let (verdict, remembered) = self.increment.check(row);
            self.window.extend(remembered);
            verdict
        });
        match verdict {
            Err(reason) => {
                self.tally.skipped[reason as usize] += 1;
                if matches!(
                    reason,
                    SkipReason::AlreadyGrouped | SkipReason::AlreadyGroupedInMargin
                ) {
                    self.tally.bytes_already_grouped += size;
                }
            }
            Ok(()) => {
                self.tally.objects_selected += 1;
                self.tally.bytes_selected += size;
                write_line(&mut self.lines, &entry_for(row));
                self.ends.push((self.lines.len(), size));
            }
        }
    }

    /// True once the batch is worth handing on (by rows too, so that progress and
    /// cancellation are timely when most rows are skipped).
    fn is_full(&self) -> bool {
        self.lines.len() >= BATCH_LINE_BYTES || self.tally.rows_seen >= BATCH_ROWS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;

    fn row(key: &str) -> InventoryRow<'_> {
        InventoryRow {
            bucket: "src",
            key: Cow::Borrowed(key),
            version_id: None,
            is_latest: Some(true),
            is_delete_marker: false,
            size: Some(10),
            last_modified: None,
            etag: None,
            storage_class: Some("STANDARD"),
            intelligent_tiering_access_tier: None,
        }
    }

    #[test]
    fn selection_rules() {
        let default = Selection::default();
        assert_eq!(default.check(&row("a")), Ok(()));
        assert_eq!(
            default.check(&InventoryRow {
                is_delete_marker: true,
                ..row("a")
            }),
            Err(SkipReason::DeleteMarker)
        );
        let old = InventoryRow {
            is_latest: Some(false),
            ..row("a")
        };
        assert_eq!(default.check(&old), Err(SkipReason::NotLatest));
        assert_eq!(
            Selection {
                all_versions: true,
                ..Selection::default()
            }
            .check(&old),
            Ok(())
        );
        let unversioned = InventoryRow {
            is_latest: None,
            ..row("a")
        };
        assert_eq!(default.check(&unversioned), Ok(()));

        let prefixed = Selection {
            include_prefix: Some("logs/".into()),
            ..Selection::default()
        };
        assert_eq!(prefixed.check(&row("logs/x")), Ok(()));
        assert_eq!(
            prefixed.check(&row("data/x")),
            Err(SkipReason::OutsidePrefix)
        );
    }

    /// Fails on the old code, which wrote the noncurrent null version with an empty VersionId,
    /// so that `bundle` read the current version, a different object.
    #[test]
    fn a_noncurrent_null_version_is_named_null_in_the_manifest() {
        let all_versions = Selection {
            all_versions: true,
            ..Selection::default()
        };
        let null_noncurrent = InventoryRow {
            is_latest: Some(false),
            ..row("k")
        };
        assert_eq!(all_versions.check(&null_noncurrent), Ok(()));
        let entry = entry_for(&null_noncurrent);
        assert_eq!(entry.version_id.as_deref(), Some("null"));
        let mut line = Vec::new();
        write_line(&mut line, &entry);
        assert_eq!(line, b"src,k,10,null,,,STANDARD\n");

        // Named versions keep their id; a current null version and rows of reports without
        // versions are read as the current object.
        let named = InventoryRow {
            version_id: Some("v1"),
            is_latest: Some(false),
            ..row("k")
        };
        assert_eq!(entry_for(&named).version_id.as_deref(), Some("v1"));
        assert_eq!(entry_for(&row("k")).version_id, None);
        let unversioned = InventoryRow {
            is_latest: None,
            ..row("k")
        };
        assert_eq!(entry_for(&unversioned).version_id, None);

        // The batch path writes the same line.
        let mut batch = SelectedRows::new(std::sync::Arc::new(all_versions), Default::default());
        batch.add(&null_noncurrent);
        assert_eq!(batch.lines().next().map(|(l, _)| l), Some(line.as_slice()));
    }

    #[test]
    fn archived_objects_are_skipped_or_selected_alone_with_glacier() {
        let deep = InventoryRow {
            storage_class: Some("DEEP_ARCHIVE"),
            ..row("a")
        };
        let tiered = InventoryRow {
            storage_class: Some("INTELLIGENT_TIERING"),
            intelligent_tiering_access_tier: Some("ARCHIVE_ACCESS"),
            ..row("a")
        };
        let instant = InventoryRow {
            storage_class: Some("GLACIER_IR"),
            ..row("a")
        };
        let default = Selection::default();
        let glacier = Selection {
            glacier: true,
            ..Selection::default()
        };
        assert_eq!(default.check(&deep), Err(SkipReason::NeedsRestore));
        assert_eq!(default.check(&tiered), Err(SkipReason::NeedsRestore));
        assert_eq!(default.check(&instant), Ok(()));
        assert_eq!(glacier.check(&deep), Ok(()));
        assert_eq!(glacier.check(&tiered), Ok(()));
        assert_eq!(glacier.check(&row("a")), Err(SkipReason::NotArchived));
    }

    fn split(sizes: &[u64], count: u64, size: u64) -> Vec<(u64, u64, u64)> {
        let mut splitter = Splitter::new(count, size);
        let mut out = Vec::new();
        for (i, s) in sizes.iter().enumerate() {
            let key = format!("k{i}");
            let r = InventoryRow {
                size: Some(*s),
                ..row(&key)
            };
            out.extend(splitter.push(&entry_for(&r)));
        }
        out.extend(splitter.finish());
        out.iter()
            .map(|m| {
                let parsed = parse_manifest(&m.body, "m").unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(parsed.len() as u64, m.objects);
                (m.number, m.objects, m.bytes)
            })
            .collect()
    }

    #[test]
    fn splits_at_exactly_the_count() {
        assert_eq!(split(&[1; 6], 3, u64::MAX), vec![(0, 3, 3), (1, 3, 3)]);
        assert_eq!(
            split(&[1; 7], 3, u64::MAX),
            vec![(0, 3, 3), (1, 3, 3), (2, 1, 1)]
        );
    }

    #[test]
    fn splits_as_soon_as_the_size_threshold_is_reached() {
        // 4+6 reaches 10: closed with both; 3+3 stays below; the last one is partial.
        assert_eq!(split(&[4, 6, 3, 3], 100, 10), vec![(0, 2, 10), (1, 2, 6)]);
        // One object bigger than the threshold makes a manifest of its own.
        assert_eq!(split(&[1, 50, 1], 100, 10), vec![(0, 2, 51), (1, 1, 1)]);
    }

    #[test]
    fn batches_hold_the_lines_and_counts_that_row_by_row_splitting_gives() {
        let selection = Selection {
            include_prefix: Some("k1".into()),
            ..Selection::default()
        };
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let rows: Vec<InventoryRow<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| InventoryRow {
                size: Some(i as u64),
                ..row(key)
            })
            .collect();
        let mut batch =
            SelectedRows::new(std::sync::Arc::new(selection.clone()), Default::default());
        rows.iter().for_each(|r| batch.add(r));
        let mut by_line = Splitter::new(4, u64::MAX);
        let mut closed = Vec::new();
        for (line, size) in batch.lines() {
            closed.extend(by_line.push_line(line, size));
        }
        closed.extend(by_line.finish());
        let mut by_entry = Splitter::new(4, u64::MAX);
        let mut expected = Vec::new();
        for r in rows.iter().filter(|r| selection.check(r).is_ok()) {
            expected.extend(by_entry.push(&entry_for(r)));
        }
        expected.extend(by_entry.finish());
        assert_eq!(closed, expected);
        assert_eq!(closed.len(), 3, "k1 and k10..k19: 11 objects");

        let mut stats = GroupStats::default();
        stats.add(&batch.tally);
        stats.add(&batch.tally);
        assert_eq!(stats.rows_seen, 40);
        assert_eq!(stats.objects_selected, 22);
        assert_eq!(stats.bytes_selected, 2 * (1 + (10..20).sum::<u64>()));
        assert_eq!(stats.skipped.get("outside_prefix"), Some(&18));
        assert_eq!(stats.skipped.len(), 1);
    }

    /// Before the earlier window: grouped then; in it: grouped only when the earlier state
    /// lists the very version; this run remembers the rows of its own window.
    #[test]
    fn an_increment_skips_what_the_earlier_window_covers_and_remembers_its_own() {
        let at = |date| InventoryRow {
            last_modified: Some(date),
            ..row("k")
        };
        let old = at("2025-11-01T00:00:00.000Z");
        let listed = at("2025-11-21T00:00:00.000Z");
        let missed = at("2025-11-21T12:00:00.000Z");
        let undated = row("k");
        let start = |date| millis_since_epoch(date).unwrap_or_else(|| panic!("{date}"));
        let increment = Increment {
            earlier: Some(EarlierWindow {
                start: start("2025-11-20T01:00:00.000Z"),
                grouped: [fingerprint(&listed)].into(),
            }),
            window_start: Some(start("2025-11-27T01:00:00.000Z")),
        };
        assert_eq!(
            increment.check(&old),
            (Err(SkipReason::AlreadyGrouped), None)
        );
        assert_eq!(
            increment.check(&listed),
            (Err(SkipReason::AlreadyGroupedInMargin), None)
        );
        assert_eq!(increment.check(&missed), (Ok(()), None));
        // A changed object (another ETag) in the window is not the version listed.
        let changed = InventoryRow {
            etag: Some("other"),
            ..listed.clone()
        };
        assert_eq!(increment.check(&changed), (Ok(()), None));
        let recent = at("2025-11-28T00:00:00.000Z");
        assert_eq!(
            increment.check(&recent),
            (Ok(()), Some(fingerprint(&recent)))
        );
        assert_eq!(
            increment.check(&undated),
            (Ok(()), Some(fingerprint(&undated)))
        );
        assert_eq!(Increment::default().check(&old), (Ok(()), None));
    }

    #[test]
    fn skip_reasons_are_listed_in_declaration_order() {
        for (index, reason) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index, "{reason}: tallies index by it");
        }
    }

    #[test]
    fn nothing_selected_means_no_manifest() {
        assert_eq!(split(&[], 3, 10), vec![]);
    }
}
