//! What bundling an inventory will cost and save, for `plan`. Pure: counts come in, a report
//! goes out.
//!
//! The request model is what `run` does (see `bundle` and `group`): per manifest one GET of the
//! manifest, a HEAD of its index and of its DLQ (the resume check) before and again after
//! taking its lease (a PUT; deleting it is free), a ListMultipartUploads,
//! CreateMultipartUpload, the parts and CompleteMultipartUpload of the archive, and a PUT of
//! the index; per object one GET, plus one GetObjectTagging for objects that have tags (the
//! inventory does not say which, so that figure is an upper bound); per object too big to
//! bundle a HEAD (its headers and metadata), a CopyObject and a PUT of its `.metadata`; for grouping, GETs of manifest.json and
//! of every data file, and per manifest a staging PUT, a HEAD of its final key (is an identical
//! manifest there already?), a GET of the staged copy and a conditional PUT into place (DELETEs
//! are free).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::bundle::upload::part_size_for;
use crate::pricing::{Prices, SizeCount};

/// Size bands of the report, by their lower bound.
pub const BANDS: [(&str, u64); 6] = [
    ("< 16 KiB", 0),
    ("16-128 KiB", 16 << 10),
    ("128 KiB-1 MiB", 128 << 10),
    ("1-16 MiB", 1 << 20),
    ("16-128 MiB", 16 << 20),
    (">= 128 MiB", 128 << 20),
];

/// Tar bytes per member besides its data, estimated: the pax header block, the pax records
/// (ETag, times, content headers, metadata: usually one block), the ustar header block, and
/// half a block of padding on average.
pub const TAR_OVERHEAD_PER_MEMBER: u64 = 1792;
/// Index bytes per archived object, estimated (one CSV row of 14 columns).
pub const INDEX_BYTES_PER_OBJECT: u64 = 300;
/// What `bundle` adds per member when it chooses a part size (see `bundle::MEMBER_OVERHEAD`).
const PART_ESTIMATE_OVERHEAD: u64 = 10 << 10;

/// Objects counted while an inventory is read with `group`'s selection and splitting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Census {
    /// Objects that go into archives, by their current storage class.
    pub archived_by_class: BTreeMap<String, SizeCount>,
    /// Objects too big to bundle (copied one by one), by their current storage class.
    pub copied_by_class: BTreeMap<String, SizeCount>,
    /// Every selected object, by size band (the order of `BANDS`).
    pub by_band: Vec<SizeCount>,
    pub manifests: u64,
    /// Manifests that produce an archive (not every object too big).
    pub archives: u64,
    /// Manifests with objects too big to bundle (bundle reads these a third time).
    pub manifests_with_copies: u64,
    pub archive_bytes: u64,
    pub archive_parts: u64,
    pub data_files: u64,
    /// The manifest being filled.
    #[serde(skip)]
    open: OpenManifest,
}

#[derive(Debug, Clone, Default)]
struct OpenManifest {
    members: u64,
    copies: u64,
    data_bytes: u64,
    tar_bytes: u64,
}

impl Census {
    pub fn new(data_files: u64) -> Census {
        Census {
            by_band: vec![SizeCount::default(); BANDS.len()],
            data_files,
            ..Census::default()
        }
    }

    /// One selected object; `max_size` is bundle's `--maxsize`.
    pub fn add_object(&mut self, class: &str, size: u64, max_size: u64) {
        let band = BANDS.iter().rposition(|(_, low)| size >= *low).unwrap_or(0);
        if let Some(count) = self.by_band.get_mut(band) {
            count.add(size);
        }
        let by_class = if size > max_size {
            self.open.copies += 1;
            &mut self.copied_by_class
        } else {
            self.open.members += 1;
            self.open.data_bytes += size;
            self.open.tar_bytes += size.div_ceil(512) * 512 + TAR_OVERHEAD_PER_MEMBER;
            &mut self.archived_by_class
        };
        by_class.entry(class.to_string()).or_default().add(size);
    }

    /// The objects added since the last call form one manifest.
    pub fn close_manifest(&mut self) {
        let open = std::mem::take(&mut self.open);
        self.manifests += 1;
        if open.copies > 0 {
            self.manifests_with_copies += 1;
        }
        if open.members == 0 {
            return;
        }
        let archive = open.tar_bytes + 1024;
        let estimate = open.data_bytes + open.members * PART_ESTIMATE_OVERHEAD + 1024;
        self.archives += 1;
        self.archive_bytes += archive;
        self.archive_parts += archive.div_ceil(part_size_for(estimate, 8 << 20));
    }

    fn total(map: &BTreeMap<String, SizeCount>) -> SizeCount {
        let mut total = SizeCount::default();
        map.values().for_each(|c| total.merge(c));
        total
    }

    pub fn archived(&self) -> SizeCount {
        Census::total(&self.archived_by_class)
    }

    pub fn copied(&self) -> SizeCount {
        Census::total(&self.copied_by_class)
    }
}

/// S3 requests that grouping and bundling make.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// GetObject of the source objects.
    pub object_gets: u64,
    /// GetObjectTagging, at most (only objects with tags are asked).
    pub tagging_gets_at_most: u64,
    /// GETs of manifest.json, the data files and the bundle manifests (once staged, to be put
    /// into place, then as a stream in two passes, three when a manifest has objects to copy).
    pub inventory_and_manifest_gets: u64,
    /// HEADs of manifests (unchanged?), indexes and DLQs (the resume check, before and under
    /// the lease), and of objects copied whole.
    pub heads: u64,
    /// ListMultipartUploads (stale uploads of the same archive and index, and of the DLQ).
    pub lists: u64,
    /// CreateMultipartUpload, UploadPart and CompleteMultipartUpload of the archives.
    pub archive_puts: u64,
    /// PUTs of indexes, leases, `.metadata` files, manifests (staged, then into place) and
    /// incremental grouping's state.
    pub other_puts: u64,
    /// CopyObject of objects too big to bundle.
    pub copies: u64,
}

/// Monthly storage, one-time costs and the break-even time, in USD.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub region: String,
    pub target_storage_class: String,
    pub objects: u64,
    pub bytes: u64,
    pub by_class: BTreeMap<String, SizeCount>,
    pub by_band: Vec<(String, SizeCount)>,
    pub objects_archived: u64,
    pub objects_copied: u64,
    pub manifests: u64,
    pub archives: u64,
    pub archive_bytes: u64,
    pub requests: Requests,
    /// Requests of bundling, with GetObjectTagging counted for every object.
    pub request_cost: f64,
    /// Retrieval fees of reading objects in the infrequent-access classes.
    pub retrieval_cost: f64,
    /// Storing the objects as they are, per month.
    pub monthly_as_is: f64,
    /// Each object moved to the target class by a lifecycle rule, without bundling.
    pub monthly_unbundled_in_target: f64,
    pub transition_cost_unbundled: f64,
    /// Archives, indexes and copied big objects in the target class, originals deleted.
    pub monthly_bundled: f64,
    pub monthly_savings: f64,
    /// Months until the one-time cost is paid back; `None` when bundling saves nothing.
    pub break_even_months: Option<f64>,
    /// The same bundles in each cold class of [`COMPARED`] but the target.
    pub compared: BTreeMap<String, Compared>,
    /// What restoring 1% and 100% of the archives would cost and take, per tier, when the
    /// target class needs a restore before a read (empty otherwise).
    pub recall: Vec<Recall>,
}

/// Restoring a share of the planned archives from the target class.
#[derive(Debug, Clone, Serialize)]
pub struct Recall {
    pub percent: u64,
    pub estimates: Vec<crate::thaw::RecallEstimate>,
}

/// What restoring 1% and all of `archives` archives of `bytes` from `target` costs per tier,
/// the copies kept `restore`'s default days; nothing for a class read at once.
fn recall(prices: &Prices, target: &str, archives: u64, bytes: u64) -> Vec<Recall> {
    let Some(class) = crate::thaw::ColdClass::of_storage_class(target) else {
        return Vec::new();
    };
    [1, 100]
        .into_iter()
        .map(|percent| Recall {
            percent,
            estimates: crate::thaw::recall_estimates(
                prices,
                class,
                archives.saturating_mul(percent).div_ceil(100),
                u64::try_from(u128::from(bytes) * u128::from(percent) / 100).unwrap_or(u64::MAX),
                crate::thaw::DEFAULT_DAYS,
            ),
        })
        .collect()
}

/// Bundled in another class: what a cold `--storage-class` would cost and save.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub monthly_bundled: f64,
    pub monthly_savings: f64,
    pub break_even_months: Option<f64>,
}

/// Classes `plan` prints beside the one asked for: the default is STANDARD, and these are
/// what bundling is for.
pub const COMPARED: [&str; 2] = ["GLACIER", "DEEP_ARCHIVE"];

const GB: f64 = (1u64 << 30) as f64;

fn per_1000(count: u64, price: f64) -> f64 {
    count as f64 / 1000.0 * price
}

/// The report for `census`, archives and copies stored in `target`, compared with the classes
/// of [`COMPARED`].
pub fn estimate(census: &Census, prices: &Prices, target: &str) -> PlanReport {
    let mut report = estimate_in(census, prices, target);
    report.compared = COMPARED
        .iter()
        .filter(|class| **class != target && prices.classes.contains_key(**class))
        .map(|class| {
            let other = estimate_in(census, prices, class);
            let compared = Compared {
                monthly_bundled: other.monthly_bundled,
                monthly_savings: other.monthly_savings,
                break_even_months: other.break_even_months,
            };
            (class.to_string(), compared)
        })
        .collect();
    report
}

/// The catalog's requests per grouping run: the run's record, then a compaction's entries and
/// page table; and the compaction's read of the record.
const CATALOG_PUTS: u64 = 3;
const CATALOG_GETS: u64 = 1;

fn estimate_in(census: &Census, prices: &Prices, target: &str) -> PlanReport {
    let archived = census.archived();
    let copied = census.copied();
    let mut all = archived;
    all.merge(&copied);
    let mut by_class = census.archived_by_class.clone();
    for (class, count) in &census.copied_by_class {
        by_class.entry(class.clone()).or_default().merge(count);
    }
    let requests = Requests {
        object_gets: archived.objects,
        tagging_gets_at_most: all.objects,
        // The catalog's compaction reads this run's record back (and an earlier
        // generation's page table and entries, when there is one: not counted).
        inventory_and_manifest_gets: 1
            + census.data_files
            + 3 * census.manifests
            + census.manifests_with_copies
            + CATALOG_GETS,
        // Per manifest: group's check of an existing manifest, and bundle's look at the index,
        // the DLQ and the archive before the lease and again under it; per copy: the source
        // and the copy's target.
        heads: 7 * census.manifests + 2 * copied.objects,
        // The archive's and the DLQ's earlier uploads, before and after each attempt.
        lists: 4 * census.manifests,
        archive_puts: 2 * census.archives + census.archive_parts,
        other_puts: census.archives + 3 * census.manifests + copied.objects + 1 + CATALOG_PUTS,
        copies: copied.objects,
    };

    let standard = prices.class("STANDARD");
    let target_price = prices.class(target);
    let source_gets: f64 = census
        .archived_by_class
        .iter()
        .map(|(class, count)| per_1000(count.objects, prices.class(class).get_per_1000))
        .sum();
    let request_cost = source_gets
        + per_1000(
            requests.tagging_gets_at_most + requests.inventory_and_manifest_gets + requests.heads,
            standard.get_per_1000,
        )
        + per_1000(requests.lists + requests.other_puts, standard.put_per_1000)
        + per_1000(
            requests.archive_puts + requests.copies,
            target_price.put_per_1000,
        );
    let retrieval_cost = by_class
        .iter()
        .map(|(class, count)| count.bytes as f64 / GB * prices.class(class).retrieval_per_gb)
        .sum();

    let monthly_as_is = by_class
        .iter()
        .map(|(class, count)| prices.monthly_storage(class, count))
        .sum();
    let monthly_unbundled_in_target = prices.monthly_storage(target, &all);
    let mut archives = SizeCount::default();
    if census.archives > 0 {
        // Archives are large; only their count and total matter for billing.
        archives = SizeCount {
            objects: census.archives,
            bytes: census.archive_bytes,
            ..SizeCount::default()
        };
    }
    let index = SizeCount {
        objects: census.archives,
        bytes: archived.objects * INDEX_BYTES_PER_OBJECT,
        ..SizeCount::default()
    };
    let monthly_bundled = prices.monthly_storage(target, &archives)
        + prices.monthly_storage(target, &copied)
        + prices.monthly_storage("STANDARD", &index);
    let monthly_savings: f64 = monthly_as_is - monthly_bundled;
    let one_time: f64 = request_cost + retrieval_cost;
    PlanReport {
        region: prices.region.clone(),
        target_storage_class: target.to_string(),
        objects: all.objects,
        bytes: all.bytes,
        by_class,
        by_band: BANDS
            .iter()
            .zip(&census.by_band)
            .map(|((name, _), count)| (name.to_string(), *count))
            .collect(),
        objects_archived: archived.objects,
        objects_copied: copied.objects,
        manifests: census.manifests,
        archives: census.archives,
        archive_bytes: census.archive_bytes,
        requests,
        request_cost,
        retrieval_cost,
        monthly_as_is,
        monthly_unbundled_in_target,
        transition_cost_unbundled: per_1000(all.objects, target_price.transition_per_1000),
        monthly_bundled,
        monthly_savings,
        break_even_months: (monthly_savings > 0.0).then(|| one_time / monthly_savings),
        compared: BTreeMap::new(),
        recall: recall(prices, target, census.archives, census.archive_bytes),
    }
}

/// The report as a readable table.
pub fn render(report: &PlanReport) -> String {
    let mut out = String::new();
    let bytes = crate::size::human_bytes;
    let _ = writeln!(
        out,
        "selected {} objects ({}): {} into {} archives in {} manifests, {} copied whole",
        report.objects,
        bytes(report.bytes),
        report.objects_archived,
        report.archives,
        report.manifests,
        report.objects_copied
    );
    write_counts(&mut out, "by storage class", &report.by_class);
    write_counts(
        &mut out,
        "by size",
        report.by_band.iter().map(|(band, count)| (band, count)),
    );
    let r = &report.requests;
    let _ = writeln!(out, "\nS3 requests");
    for (what, n) in [
        ("GetObject (objects)", r.object_gets),
        ("GetObjectTagging, at most", r.tagging_gets_at_most),
        ("GET inventory and manifests", r.inventory_and_manifest_gets),
        ("HEAD (unchanged and resume checks)", r.heads),
        ("ListMultipartUploads", r.lists),
        ("archive uploads and parts", r.archive_puts),
        ("index, manifest and metadata PUT", r.other_puts),
        ("CopyObject (big objects)", r.copies),
    ] {
        let _ = writeln!(out, "  {what:<40} {n:>12}");
    }
    let usd = |x: f64| format!("${x:.2}");
    let _ = writeln!(
        out,
        "\ncosts in {} (list prices; check them, or pass --prices FILE)",
        report.region
    );
    let rows = [
        ("one-time: requests".to_string(), usd(report.request_cost)),
        (
            "one-time: retrieval fees".to_string(),
            usd(report.retrieval_cost),
        ),
        (
            "per month: as they are".to_string(),
            usd(report.monthly_as_is),
        ),
        (
            format!("per month: each object in {}", report.target_storage_class),
            format!(
                "{} (+ {} of transitions once)",
                usd(report.monthly_unbundled_in_target),
                usd(report.transition_cost_unbundled)
            ),
        ),
        (
            format!("per month: bundled in {}", report.target_storage_class),
            usd(report.monthly_bundled),
        ),
        (
            "per month: saved by bundling".to_string(),
            usd(report.monthly_savings),
        ),
        (
            "break-even".to_string(),
            report
                .break_even_months
                .map_or("never (bundling saves nothing)".to_string(), |m| {
                    format!("{m:.1} months")
                }),
        ),
    ];
    for (what, value) in rows {
        let _ = writeln!(out, "  {what:<40} {value}");
    }
    for (class, other) in &report.compared {
        let _ = writeln!(
            out,
            "  {:<40} {} (saves {}; break-even {})",
            format!("per month: bundled in {class} instead"),
            usd(other.monthly_bundled),
            usd(other.monthly_savings),
            other
                .break_even_months
                .map_or("never".to_string(), |m| format!("{m:.1} months"))
        );
    }
    if !report.recall.is_empty() {
        let _ = writeln!(
            out,
            "\nrecall from {} (restore; copies kept {} days)",
            report.target_storage_class,
            crate::thaw::DEFAULT_DAYS
        );
    }
    for share in &report.recall {
        let tiers = share
            .estimates
            .iter()
            .map(|e| format!("{} {} ({})", e.tier.name(), usd(e.total_usd), e.time))
            .collect::<Vec<_>>()
            .join(", ");
        let first = share.estimates.first();
        let _ = writeln!(
            out,
            "  {:<40} {tiers}",
            format!(
                "{}% ({} archives, {})",
                share.percent,
                first.map_or(0, |e| e.archives),
                bytes(first.map_or(0, |e| e.bytes))
            )
        );
    }
    out
}

/// One table of the report: objects and bytes per storage class or size band.
fn write_counts<'a>(
    out: &mut String,
    title: &str,
    rows: impl IntoIterator<Item = (&'a String, &'a SizeCount)>,
) {
    let _ = writeln!(out, "\n{title:<20}      objects        bytes");
    for (name, count) in rows {
        let _ = writeln!(
            out,
            "  {name:<20} {:>12} {:>12}",
            count.objects,
            crate::size::human_bytes(count.bytes)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100,000 STANDARD objects of 4 KiB, 2 of 3 GiB, in manifests of 50,000.
    fn census() -> Census {
        let mut census = Census::new(2);
        for i in 0..100_000u64 {
            census.add_object("STANDARD", 4096, 2 << 30);
            if (i + 1) % 50_000 == 0 {
                census.close_manifest();
            }
        }
        census.add_object("STANDARD_IA", 3 << 30, 2 << 30);
        census.add_object("STANDARD_IA", 3 << 30, 2 << 30);
        census.close_manifest();
        census
    }

    #[test]
    fn archives_and_parts_follow_the_tar_layout_and_bundle_s_part_size() {
        let census = census();
        assert_eq!((census.manifests, census.archives), (3, 2));
        // Per archive: 50,000 × (4096 + 1792) + 1024 bytes = 294,401,024; 8 MiB parts.
        assert_eq!(census.archive_bytes, 2 * 294_401_024);
        assert_eq!(census.archive_parts, 2 * 294_401_024u64.div_ceil(8 << 20));
        assert_eq!(census.by_band[0].objects, 100_000);
        assert_eq!(census.by_band[5].objects, 2);
        assert_eq!(census.copied().objects, 2);
    }

    #[test]
    fn costs_match_a_hand_computation() {
        let prices = Prices::builtin();
        let report = estimate(&census(), &prices, "DEEP_ARCHIVE");
        let r = &report.requests;
        assert_eq!(r.object_gets, 100_000);
        assert_eq!(r.tagging_gets_at_most, 100_002);
        // Each of the 3 manifests read once staged and in two passes, a third over the one with
        // both copies; the catalog's record read back.
        assert_eq!(r.inventory_and_manifest_gets, 1 + 2 + 9 + 1 + CATALOG_GETS);
        assert_eq!((r.heads, r.lists), (25, 12));
        let parts = 2 * 36; // 294,401,024 / 8 MiB, rounded up
        assert_eq!(r.archive_puts, 4 + parts);
        assert_eq!(r.other_puts, 2 + 9 + 2 + 1 + CATALOG_PUTS);
        assert_eq!(r.copies, 2);
        // GETs at 0.0004/1000 (objects, tagging, inventory, heads); lists and other PUTs at
        // 0.005/1000; archive PUTs and copies at Deep Archive's 0.05/1000.
        let requests = (100_000.0 + 100_002.0 + 14.0 + 25.0) / 1000.0 * 0.0004
            + (12.0 + 17.0) / 1000.0 * 0.005
            + (76.0 + 2.0) / 1000.0 * 0.05;
        assert!(
            (report.request_cost - requests).abs() < 1e-9,
            "{}",
            report.request_cost
        );
        // Reading 6 GiB of Standard-IA: 0.01 per GB.
        assert!((report.retrieval_cost - 0.06).abs() < 1e-9);
        let small = 100_000.0 * 4096.0 / GB;
        let as_is = small * 0.023 + 6.0 * 0.0125;
        assert!((report.monthly_as_is - as_is).abs() < 1e-9);
        let bundled = (2.0 * 294_401_024.0 + 2.0 * 32768.0 + 6.0 * GB + 2.0 * 32768.0) / GB
            * 0.00099
            + (4.0 * 8192.0) / GB * 0.023
            + 100_000.0 * 300.0 / GB * 0.023;
        assert!((report.monthly_bundled - bundled).abs() < 1e-9);
        let unbundled = (100_002.0 * 32768.0 + 100_000.0 * 4096.0 + 6.0 * GB) / GB * 0.00099
            + 100_002.0 * 8192.0 / GB * 0.023;
        assert!((report.monthly_unbundled_in_target - unbundled).abs() < 1e-9);
        assert!((report.transition_cost_unbundled - 100.002 * 0.05).abs() < 1e-9);
        let savings = as_is - bundled;
        assert!((report.monthly_savings - savings).abs() < 1e-9);
        let months = (requests + 0.06) / savings;
        assert!((report.break_even_months.unwrap() - months).abs() < 1e-9);
        let table = render(&report);
        for needle in [
            "DEEP_ARCHIVE",
            "break-even",
            "GetObjectTagging, at most",
            "us-east-1",
        ] {
            assert!(table.contains(needle), "{table}");
        }
    }

    #[test]
    fn bundling_that_saves_nothing_never_breaks_even() {
        let mut census = Census::new(1);
        census.add_object("DEEP_ARCHIVE", 1 << 30, 2 << 30);
        census.close_manifest();
        let report = estimate(&census, &Prices::builtin(), "STANDARD");
        assert!(report.monthly_savings < 0.0);
        assert_eq!(report.break_even_months, None);
        assert!(render(&report).contains("never"));
    }

    #[test]
    fn the_cold_classes_are_compared_beside_the_one_asked_for() {
        let prices = Prices::builtin();
        let standard = estimate(&census(), &prices, "STANDARD");
        assert_eq!(
            standard.compared.keys().collect::<Vec<_>>(),
            ["DEEP_ARCHIVE", "GLACIER"]
        );
        let deep = estimate(&census(), &prices, "DEEP_ARCHIVE");
        assert_eq!(deep.compared.keys().collect::<Vec<_>>(), ["GLACIER"]);
        let compared = &standard.compared["DEEP_ARCHIVE"];
        assert_eq!(compared.monthly_bundled, deep.monthly_bundled);
        assert_eq!(compared.break_even_months, deep.break_even_months);
        assert!(
            render(&standard).contains("per month: bundled in DEEP_ARCHIVE instead"),
            "{}",
            render(&standard)
        );
    }
}
