//! Verification bookkeeping (pure): where each object of a bundle manifest went (its archive's
//! index, a big-object copy or the DLQ), what is wrong, and the report `verify` prints. The
//! S3 reading is in [`check`].

pub mod check;
pub mod spill;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::archive::records::{DlqReason, DlqRow, IndexRow};
use crate::manifest::ManifestEntry;

/// Where an object was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// Row of the index.
    Index(usize),
    /// Entry of the big-object copies.
    BigObject(usize),
    /// Row of the DLQ.
    Dlq(usize),
}

/// A big-object copy found for an object, with what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigCopy {
    /// The copy's `.metadata` row.
    pub row: IndexRow,
    pub problem: Option<String>,
}

/// What verification says about one object of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// In the index with a sound member, or copied with a sound copy.
    Verified(Place),
    InDlq(DlqReason),
    /// In the DLQ, and listed by a later redrive manifest of its family, which accounts for it.
    Redriven,
    Missing,
    /// Found in more than one place.
    Duplicated(Vec<Place>),
    /// Found once, but the index row, its member or the copy is wrong.
    Mismatched(Place, String),
}

impl Place {
    /// The place in tables that hold `index`, `big` and `dlq` rows before these.
    pub fn after(self, index: usize, big: usize, dlq: usize) -> Place {
        match self {
            Place::Index(i) => Place::Index(i + index),
            Place::BigObject(i) => Place::BigObject(i + big),
            Place::Dlq(i) => Place::Dlq(i + dlq),
        }
    }
}

impl Status {
    /// The status with its places in tables that hold `index`, `big` and `dlq` rows before.
    pub fn after(self, index: usize, big: usize, dlq: usize) -> Status {
        let shift = |place: Place| place.after(index, big, dlq);
        match self {
            Status::Verified(place) => Status::Verified(shift(place)),
            Status::Duplicated(places) => {
                Status::Duplicated(places.into_iter().map(shift).collect())
            }
            Status::Mismatched(place, detail) => Status::Mismatched(shift(place), detail),
            other => other,
        }
    }
}

/// The bundle's outputs as read back (all of them, or one partition's).
pub struct Outputs<'a> {
    pub index: &'a [IndexRow],
    /// Each index row's number in the index (0 for the first row).
    pub index_numbers: &'a [usize],
    /// Each DLQ row's number in the DLQ.
    pub dlq_numbers: &'a [usize],
    /// A problem per index row (its member in the archive), `None` when sound.
    pub index_problems: &'a [Option<String>],
    pub big: &'a [BigCopy],
    pub dlq: &'a [DlqRow],
}

impl Outputs<'_> {
    fn describe(&self, place: Place) -> String {
        match place {
            Place::Index(i) => format!(
                "index row {}",
                self.index_numbers.get(i).copied().unwrap_or(i) + 2
            ),
            Place::BigObject(i) => format!(
                "big-object copy {}",
                self.big.get(i).map(|b| b.row.member.as_str()).unwrap_or("")
            ),
            Place::Dlq(i) => format!(
                "DLQ row {} ({})",
                self.dlq_numbers.get(i).copied().unwrap_or(i) + 2,
                self.dlq.get(i).map(|d| d.reason.as_str()).unwrap_or("")
            ),
        }
    }
}

/// Finds each manifest entry in the outputs. Returns a status per entry and the places that
/// no entry claimed (rows for objects the manifest does not list).
pub fn reconcile(
    entries: &[ManifestEntry<'_>],
    outputs: &Outputs<'_>,
) -> (Vec<Status>, Vec<Place>) {
    // (bucket, key) -> places, with the version each place records.
    type Versioned<'v> = Vec<(Place, Option<&'v str>)>;
    let mut found: HashMap<(&str, &str), Versioned<'_>> = HashMap::new();
    for (i, row) in outputs.index.iter().enumerate() {
        found
            .entry((&row.bucket, &row.key))
            .or_default()
            .push((Place::Index(i), row.version_id.as_deref()));
    }
    for (i, copy) in outputs.big.iter().enumerate() {
        found
            .entry((&copy.row.bucket, &copy.row.key))
            .or_default()
            .push((Place::BigObject(i), copy.row.version_id.as_deref()));
    }
    for (i, row) in outputs.dlq.iter().enumerate() {
        found
            .entry((&row.bucket, &row.key))
            .or_default()
            .push((Place::Dlq(i), row.version_id.as_deref()));
    }
    let mut claimed = std::collections::HashSet::new();
    let statuses = entries
        .iter()
        .map(|entry| {
            let wanted = entry.version_id.as_deref();
            let places: Vec<Place> = found
                .get(&(entry.bucket.as_ref(), entry.key.as_ref()))
                .into_iter()
                .flatten()
                .filter(|(_, version)| match (wanted, version) {
                    (Some(wanted), Some(version)) => wanted == *version,
                    _ => true,
                })
                .map(|(place, _)| *place)
                .collect();
            claimed.extend(places.iter().copied());
            match places.as_slice() {
                [] => Status::Missing,
                [place] => judge(entry, *place, outputs),
                _ => Status::Duplicated(places),
            }
        })
        .collect();
    let mut unclaimed: Vec<Place> = (0..outputs.index.len())
        .map(Place::Index)
        .chain((0..outputs.big.len()).map(Place::BigObject))
        .chain((0..outputs.dlq.len()).map(Place::Dlq))
        .filter(|place| !claimed.contains(place))
        .collect();
    unclaimed.sort();
    (statuses, unclaimed)
}

fn judge(entry: &ManifestEntry<'_>, place: Place, outputs: &Outputs<'_>) -> Status {
    let (row, problem) = match place {
        Place::Dlq(i) => {
            return match outputs.dlq.get(i) {
                Some(row) => Status::InDlq(row.reason),
                None => Status::Missing,
            }
        }
        Place::Index(i) => (
            outputs.index.get(i),
            outputs.index_problems.get(i).cloned().flatten(),
        ),
        Place::BigObject(i) => {
            let copy = outputs.big.get(i);
            (copy.map(|c| &c.row), copy.and_then(|c| c.problem.clone()))
        }
    };
    let Some(row) = row else {
        return Status::Missing;
    };
    if let Some(problem) = problem {
        return Status::Mismatched(place, problem);
    }
    if row.size != entry.size {
        return Status::Mismatched(
            place,
            format!(
                "{} bytes archived, the manifest says {}",
                row.size, entry.size
            ),
        );
    }
    Status::Verified(place)
}

/// Counts of one manifest, or of all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub objects: u64,
    pub verified: u64,
    pub bytes_verified: u64,
    /// Of `verified`, those in cold archives (GLACIER, DEEP_ARCHIVE, not restored), proven by
    /// the archive's HEAD against what its index recorded when it was written.
    pub verified_cold: u64,
    /// Archives proven that way.
    pub cold_archives: u64,
    pub in_dlq: BTreeMap<DlqReason, u64>,
    /// DLQ rows a redrive manifest lists: counted there, not in `objects`.
    pub redriven: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub mismatched: u64,
    /// Index, copy or DLQ rows for objects the manifest does not list.
    pub unexpected: u64,
    /// Problems of a manifest as a whole (archive missing or of the wrong length, unreadable
    /// index or DLQ).
    pub manifest_problems: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.objects += other.objects;
        self.verified += other.verified;
        self.bytes_verified += other.bytes_verified;
        self.verified_cold += other.verified_cold;
        self.cold_archives += other.cold_archives;
        for (reason, n) in &other.in_dlq {
            *self.in_dlq.entry(*reason).or_default() += n;
        }
        self.redriven += other.redriven;
        self.missing += other.missing;
        self.duplicated += other.duplicated;
        self.mismatched += other.mismatched;
        self.unexpected += other.unexpected;
        self.manifest_problems += other.manifest_problems;
    }

    /// Problems found: everything but verified objects and objects in a DLQ.
    pub fn problems(&self) -> u64 {
        self.missing + self.duplicated + self.mismatched + self.unexpected + self.manifest_problems
    }
}

/// One problem, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `missing`, `duplicated`, `mismatched`, `unexpected` or `manifest`.
    pub kind: &'static str,
    /// `s3://bucket/key` of the object, or the manifest's location.
    pub object: String,
    pub detail: String,
}

/// The verification of one manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ManifestReport {
    pub manifest: String,
    pub archive: Option<String>,
    pub index: Option<String>,
    pub dlq: Option<String>,
    /// The archive's storage class when it is cold: proven by its HEAD, not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold: Option<String>,
    pub counts: Counts,
    pub problems: Vec<Problem>,
}

impl ManifestReport {
    pub fn manifest_problem(&mut self, detail: impl Into<String>) {
        self.counts.manifest_problems += 1;
        self.problems.push(Problem {
            kind: "manifest",
            object: self.manifest.clone(),
            detail: detail.into(),
        });
    }

    /// Counts the statuses and lists their problems.
    pub fn record(
        &mut self,
        entries: &[ManifestEntry<'_>],
        statuses: &[Status],
        unclaimed: &[Place],
        outputs: &Outputs<'_>,
    ) {
        for (entry, status) in entries.iter().zip(statuses) {
            if *status == Status::Redriven {
                self.counts.redriven += 1;
                continue;
            }
            self.counts.objects += 1;
            let object = format!("s3://{}/{}", entry.bucket, entry.key);
            let (kind, detail) = match status {
                Status::Verified(place) => {
                    self.counts.verified += 1;
                    self.counts.bytes_verified += entry.size;
                    if self.cold.is_some() && matches!(place, Place::Index(_)) {
                        self.counts.verified_cold += 1;
                    }
                    continue;
                }
                Status::InDlq(reason) => {
                    *self.counts.in_dlq.entry(*reason).or_default() += 1;
                    continue;
                }
                Status::Redriven => continue,
                Status::Missing => {
                    self.counts.missing += 1;
                    (
                        "missing",
                        "in none of the index, the big-object copies and the DLQ".to_string(),
                    )
                }
                Status::Duplicated(places) => {
                    self.counts.duplicated += 1;
                    let places: Vec<String> = places.iter().map(|p| outputs.describe(*p)).collect();
                    ("duplicated", format!("found in {}", places.join(" and ")))
                }
                Status::Mismatched(place, detail) => {
                    self.counts.mismatched += 1;
                    (
                        "mismatched",
                        format!("{}: {detail}", outputs.describe(*place)),
                    )
                }
            };
            self.problems.push(Problem {
                kind,
                object,
                detail,
            });
        }
        for place in unclaimed {
            let (bucket, key) = match *place {
                Place::Index(i) => outputs.index.get(i).map(|r| (&r.bucket, &r.key)),
                Place::BigObject(i) => outputs.big.get(i).map(|c| (&c.row.bucket, &c.row.key)),
                Place::Dlq(i) => outputs.dlq.get(i).map(|r| (&r.bucket, &r.key)),
            }
            .unzip();
            self.counts.unexpected += 1;
            self.problems.push(Problem {
                kind: "unexpected",
                object: format!(
                    "s3://{}/{}",
                    bucket.map(String::as_str).unwrap_or(""),
                    key.map(String::as_str).unwrap_or("")
                ),
                detail: format!(
                    "{} is for an object the manifest does not list",
                    outputs.describe(*place)
                ),
            });
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    pub deep: bool,
    pub manifests: Vec<ManifestReport>,
    pub totals: Counts,
    pub problems: u64,
    pub elapsed_seconds: f64,
}

impl VerifyReport {
    pub fn push(&mut self, manifest: ManifestReport) {
        self.totals.add(&manifest.counts);
        self.problems = self.totals.problems();
        self.manifests.push(manifest);
    }
}

fn dlq_cell(counts: &BTreeMap<DlqReason, u64>) -> String {
    if counts.is_empty() {
        return "0".into();
    }
    counts
        .iter()
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The table `verify` prints: one line per manifest, the totals, then each problem (at most
/// `max_problems` of them; `--json` has them all).
pub fn table(report: &VerifyReport, max_problems: usize) -> String {
    let mut out = String::new();
    let row = |name: &str, c: &Counts| {
        format!(
            "{:>9} {:>9} {:>8} {:>8} {:>10} {:>10} {:>10}  {:<16} {name}\n",
            c.objects,
            c.verified,
            c.redriven,
            c.missing,
            c.duplicated,
            c.mismatched + c.unexpected,
            c.manifest_problems,
            dlq_cell(&c.in_dlq),
        )
    };
    out.push_str(&format!(
        "{:>9} {:>9} {:>8} {:>8} {:>10} {:>10} {:>10}  {:<16} manifest\n",
        "objects",
        "verified",
        "redriven",
        "missing",
        "duplicated",
        "mismatched",
        "archive",
        "in DLQ"
    ));
    for manifest in &report.manifests {
        out.push_str(&row(&manifest.manifest, &manifest.counts));
    }
    out.push_str(&row(
        &format!("TOTAL ({} manifests)", report.manifests.len()),
        &report.totals,
    ));
    let problems: Vec<&Problem> = report.manifests.iter().flat_map(|m| &m.problems).collect();
    for problem in problems.iter().take(max_problems) {
        out.push_str(&format!(
            "{:<10} {}: {}\n",
            problem.kind, problem.object, problem.detail
        ));
    }
    if problems.len() > max_problems {
        out.push_str(&format!(
            "… and {} more problems (--json lists them all)\n",
            problems.len() - max_problems
        ));
    }
    let cold = &report.totals;
    if cold.cold_archives > 0 {
        out.push_str(&format!(
            "{} of the verified objects are in {} cold archives (GLACIER, DEEP_ARCHIVE), proven \
             by each archive's HEAD against what its index recorded when it was written; \
             --deep needs a restore\n",
            cold.verified_cold, cold.cold_archives
        ));
    }
    let in_dlq: u64 = report.totals.in_dlq.values().sum();
    if in_dlq > 0 {
        out.push_str(&format!(
            "{in_dlq} objects are in DLQs, not archived: a manifest's records are final, so \
             bundling it again changes nothing; `s3bundler redrive` puts those worth another \
             try in new bundle manifests\n"
        ));
    }
    out.push_str(&if report.problems == 0 {
        "verified: no problems\n".to_string()
    } else {
        format!("{} problems found\n", report.problems)
    });
    out
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn entry(key: &str, size: u64, version: Option<&str>) -> ManifestEntry<'static> {
        ManifestEntry {
            bucket: Cow::Borrowed("src"),
            key: Cow::Owned(key.into()),
            size,
            version_id: version.map(|v| Cow::Owned(v.into())),
            etag: None,
            last_modified: None,
            storage_class: None,
        }
    }

    fn row(key: &str, size: u64, version: Option<&str>) -> IndexRow {
        IndexRow {
            bucket: "src".into(),
            key: key.into(),
            size,
            version_id: version.map(str::to_string),
            member: format!("src/{key}"),
            ..IndexRow::default()
        }
    }

    fn dlq(key: &str, reason: DlqReason) -> DlqRow {
        DlqRow {
            bucket: "src".into(),
            key: key.into(),
            version_id: None,
            size: 1,
            last_modified: None,
            reason,
            detail: String::new(),
        }
    }

    #[test]
    fn every_kind_of_outcome_is_told_apart() {
        let entries = vec![
            entry("ok", 1, None),
            entry("copied", 9, None),
            entry("dlq", 1, None),
            entry("gone", 1, None),
            entry("twice", 1, None),
            entry("bad-member", 1, None),
            entry("resized", 1, None),
            entry("v", 1, Some("v2")),
            entry("bad-copy", 9, None),
        ];
        let index = vec![
            row("ok", 1, None),
            row("twice", 1, None),
            row("bad-member", 1, None),
            row("resized", 2, None),
            row("v", 1, Some("v1")),
            row("v", 1, Some("v2")),
            row("stray", 1, None),
        ];
        let problems = vec![
            None,
            None,
            Some("header names another key".to_string()),
            None,
            None,
            None,
            None,
        ];
        let big = vec![
            BigCopy {
                row: row("copied", 9, None),
                problem: None,
            },
            BigCopy {
                row: row("bad-copy", 9, None),
                problem: Some("the copy is missing".into()),
            },
        ];
        let dlq = vec![
            dlq("dlq", DlqReason::Glacier),
            dlq("twice", DlqReason::Retry),
        ];
        let numbers: Vec<usize> = (0..index.len()).collect();
        let outputs = Outputs {
            index: &index,
            index_numbers: &numbers,
            dlq_numbers: &numbers[..dlq.len()],
            index_problems: &problems,
            big: &big,
            dlq: &dlq,
        };
        let (statuses, unclaimed) = reconcile(&entries, &outputs);
        assert_eq!(statuses[0], Status::Verified(Place::Index(0)));
        assert_eq!(statuses[1], Status::Verified(Place::BigObject(0)));
        assert_eq!(statuses[2], Status::InDlq(DlqReason::Glacier));
        assert_eq!(statuses[3], Status::Missing);
        assert_eq!(
            statuses[4],
            Status::Duplicated(vec![Place::Index(1), Place::Dlq(1)])
        );
        assert!(matches!(
            statuses[5],
            Status::Mismatched(Place::Index(2), _)
        ));
        assert!(matches!(&statuses[6], Status::Mismatched(_, d) if d.contains("manifest says 1")));
        assert_eq!(statuses[7], Status::Verified(Place::Index(5)));
        assert!(matches!(
            statuses[8],
            Status::Mismatched(Place::BigObject(1), _)
        ));
        // The other version of v and the stray row belong to no entry.
        assert_eq!(unclaimed, vec![Place::Index(4), Place::Index(6)]);

        let mut report = ManifestReport {
            manifest: "s3://m/x.index".into(),
            ..ManifestReport::default()
        };
        report.record(&entries, &statuses, &unclaimed, &outputs);
        report.manifest_problem("archive is 10 bytes short");
        let c = &report.counts;
        assert_eq!(
            (
                c.objects,
                c.verified,
                c.missing,
                c.duplicated,
                c.mismatched,
                c.unexpected
            ),
            (9, 3, 1, 1, 3, 2)
        );
        assert_eq!(c.in_dlq.get(&DlqReason::Glacier), Some(&1));
        assert_eq!(c.problems(), 8);
        let mut all = VerifyReport::default();
        all.push(report.clone());
        all.push(report);
        assert_eq!(all.totals.objects, 18);
        assert_eq!(all.problems, 16);
        let text = table(&all, 3);
        assert!(text.contains("TOTAL (2 manifests)"), "{text}");
        assert!(text.contains("Glacier=2"), "{text}");
        assert!(text.contains("… and 13 more problems"), "{text}");
        assert!(text.contains("16 problems found"), "{text}");
        let json = serde_json::to_value(&all).unwrap_or_default();
        assert_eq!(json["totals"]["in_dlq"]["Glacier"], 2);
        assert_eq!(json["manifests"][0]["problems"][0]["kind"], "missing");
    }

    #[test]
    fn a_clean_manifest_has_no_problems() {
        let entries = vec![entry("a", 1, None), entry("b", 2, None)];
        let index = vec![row("a", 1, None), row("b", 2, None)];
        let outputs = Outputs {
            index: &index,
            index_numbers: &[0, 1],
            dlq_numbers: &[],
            index_problems: &[None, None],
            big: &[],
            dlq: &[],
        };
        let (statuses, unclaimed) = reconcile(&entries, &outputs);
        assert!(unclaimed.is_empty());
        let mut report = ManifestReport::default();
        report.record(&entries, &statuses, &unclaimed, &outputs);
        assert_eq!(report.counts.verified, 2);
        assert_eq!(report.counts.bytes_verified, 3);
        assert_eq!(report.counts.problems(), 0);
        let mut all = VerifyReport::default();
        all.push(report);
        assert!(table(&all, 10).ends_with("verified: no problems\n"));
        // In a cold archive: verified, and counted apart.
        let mut cold = ManifestReport {
            cold: Some("DEEP_ARCHIVE".into()),
            ..ManifestReport::default()
        };
        cold.counts.cold_archives = 1;
        cold.record(&entries, &statuses, &unclaimed, &outputs);
        assert_eq!((cold.counts.verified, cold.counts.verified_cold), (2, 2));
        all.push(cold);
        let text = table(&all, 10);
        assert!(
            text.contains("2 of the verified objects are in 1 cold archives"),
            "{text}"
        );
        // Nothing at all is also clean.
        let (statuses, unclaimed) = reconcile(&[], &outputs);
        assert!(statuses.is_empty() && unclaimed.len() == 2);
    }
}
