//! `plan --sample N`: how long a run would take. While `plan` reads the inventory, a uniform
//! random sample of N of the objects bundle would GET is kept (reservoir sampling, N entries
//! held) and the distinct key prefixes are counted; the sample is then read with GETs at
//! bundle's concurrency (bytes discarded, nothing written) and the measured rates project the
//! wall time for a number of workers.
//!
//! The projection for one worker (a `bundle -q` process taking one manifest at a time):
//!
//! * object GETs: the larger of objects / (objects per second) and bytes / (bytes per second),
//!   both measured over the sample's wall time, times [`BUNDLE_OVERHEAD`] for what bundle
//!   does with each object besides the GET;
//! * per manifest, the requests of the request model besides object GETs (manifest passes,
//!   the HEADs of its records, lease, ListMultipartUploads, the upload's create and complete,
//!   index PUT, group's staging PUT, HEAD, GET and PUT: [`ROUND_TRIPS_PER_MANIFEST`]) taken as
//!   sequential round trips at the sample's fastest GET latency (the median is inflated by
//!   the sample's own hundreds of GETs in flight, which these requests do not wait behind);
//! * objects copied whole: two HEADs, CopyObject and a `.metadata` PUT each, [`CONCURRENT_COPIES`]
//!   at once, at that latency;
//! * reading the inventory, once, as long as this `plan` took to read it.
//!
//! For W workers the per-manifest work is spread over min(W, manifests) workers, and the
//! total GET rate is capped at [`GETS_PER_SECOND_PER_PREFIX`] × the prefixes the selected
//! keys spread across (S3's documented per-prefix limit; it assumes the load spreads evenly).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::bundle::object::{ObjectReader, ReadFailure};
use crate::manifest::ManifestEntry;
use crate::pricing::Prices;
use crate::s3::S3;

/// GETs run with the window full that the steady rates need, at least.
const MIN_STEADY_GETS: usize = 16;
/// S3's documented GET/HEAD rate per partitioned prefix.
pub const GETS_PER_SECOND_PER_PREFIX: f64 = 5500.0;
/// Distinct prefixes counted at most: past this the per-prefix cap (55 million GETs a second)
/// binds no fleet, and the set stays small.
pub const PREFIXES_COUNTED: usize = 10_000;
/// Sequential round trips per manifest besides object GETs: 2 manifest GETs, group's HEAD,
/// bundle's two looks at its records (three HEADs at once each), the lease PUT and its
/// release, ListMultipartUploads before and after the attempt (two at once each), create and
/// complete of the archive upload, its last part, the index PUT, group's staging PUT, and its
/// GET of the staged manifest and PUT into place.
pub const ROUND_TRIPS_PER_MANIFEST: f64 = 17.0;
/// Big objects bundle copies at once (see `bundle`).
pub const CONCURRENT_COPIES: f64 = 4.0;
/// How much longer bundle takes over its objects than the sample's bare GETs: it also frames
/// each object as a tar member, uploads it in a part and writes an index row. The Benchmarks
/// measured bundle at 80-82% of a bare GET loop's rate at 20 ms a request, with 1.12-1.25
/// times its CPU per object; `plan`'s test measured 1.06-1.27 (on a local server).
pub const BUNDLE_OVERHEAD: f64 = 1.2;
/// Requests per object copied whole: HEADs of the source and the target, CopyObject,
/// `.metadata` PUT.
const ROUND_TRIPS_PER_COPY: f64 = 4.0;

/// The prefix S3 partitions `key` under, as approximated here: the key up to and including
/// its last `/` (the whole "folder"), or the empty prefix for a key without one. S3 partitions
/// by leading characters and splits busy prefixes further on its own, so this undercounts for
/// flat keyspaces S3 has already split and overcounts for folders S3 has never needed to split.
pub fn prefix_of(key: &str) -> &str {
    key.rfind('/').map_or("", |end| &key[..=end])
}

/// Distinct bucket/prefix pairs, counted up to [`PREFIXES_COUNTED`].
#[derive(Debug, Default)]
pub struct Prefixes {
    /// Prefixes by bucket.
    seen: HashMap<String, HashSet<String>>,
    counted: usize,
    more: bool,
}

impl Prefixes {
    pub fn add(&mut self, bucket: &str, key: &str) {
        if self.more {
            return;
        }
        let prefix = prefix_of(key);
        // Looked up before allocating: most keys share their prefix with many others.
        if self
            .seen
            .get(bucket)
            .is_some_and(|prefixes| prefixes.contains(prefix))
        {
            return;
        }
        if self.counted >= PREFIXES_COUNTED {
            self.more = true;
            return;
        }
        self.counted += 1;
        self.seen
            .entry(bucket.to_string())
            .or_default()
            .insert(prefix.to_string());
    }

    pub fn count(&self) -> u64 {
        self.counted as u64
    }

    /// True when there were more than [`PREFIXES_COUNTED`].
    pub fn at_least(&self) -> bool {
        self.more
    }
}

/// A uniform random sample of at most `capacity` of the entries offered (Algorithm R): the
/// i-th entry (from 1) replaces a random kept one with probability capacity / i.
pub struct Reservoir {
    capacity: usize,
    seen: u64,
    kept: Vec<ManifestEntry<'static>>,
    rng: fastrand::Rng,
}

impl Reservoir {
    pub fn new(capacity: usize, rng: fastrand::Rng) -> Reservoir {
        Reservoir {
            capacity,
            seen: 0,
            kept: Vec::with_capacity(capacity.min(1 << 16)),
            rng,
        }
    }

    pub fn offer(&mut self, entry: &ManifestEntry<'_>) {
        self.seen += 1;
        if self.kept.len() < self.capacity {
            self.kept.push(entry.clone().into_owned());
            return;
        }
        let slot = self.rng.u64(0..self.seen);
        if let Some(kept) = usize::try_from(slot)
            .ok()
            .and_then(|slot| self.kept.get_mut(slot))
        {
            *kept = entry.clone().into_owned();
        }
    }

    /// Entries offered.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn into_entries(self) -> Vec<ManifestEntry<'static>> {
        self.kept
    }
}

/// What reading the sample measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SampleResult {
    /// `--sample`.
    pub requested: u64,
    /// Objects GET (fewer than requested when fewer were selected).
    pub objects: u64,
    /// GETs in flight at most.
    pub concurrency: usize,
    pub succeeded: u64,
    /// Failed GETs by reason (NoSuchKey, AccessDenied, Glacier, Changed, …).
    pub failed: BTreeMap<String, u64>,
    pub bytes: u64,
    pub wall_seconds: f64,
    /// Successful objects and their bytes per second at `concurrency` in flight: in flight ÷
    /// mean latency of the GETs that ran with the window full (see `steady_rates`); when the
    /// sample is too small for those, per second of the sample's wall time.
    pub objects_per_second: f64,
    pub bytes_per_second: f64,
    /// Whole GET (request to last byte) latency of the successful GETs, in milliseconds.
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    /// The fastest: a round trip without the sample's own queueing, which the projection
    /// charges for each of a manifest's other requests.
    pub latency_min_ms: f64,
    /// The sample was too small to keep the window of GETs full for a while (fewer than twice
    /// bundle's concurrency and a few): the rates are over its wall time, which includes
    /// opening the connections and a window never full, so they are lower bounds.
    pub rates_are_lower_bounds: bool,
    /// GET requests (and retrieval fees, for infrequent-access classes) of the sample, USD.
    pub cost: f64,
}

/// GETs every entry (`concurrency` at a time: bundle's, which the rates are for), discarding
/// the bytes, and times them.
pub async fn read_sample(
    s3: &S3,
    entries: Vec<ManifestEntry<'static>>,
    requested: u64,
    concurrency: usize,
    prices: &Prices,
) -> SampleResult {
    let concurrency = concurrency.clamp(1, entries.len().max(1));
    let mut result = SampleResult {
        requested,
        objects: entries.len() as u64,
        concurrency,
        ..SampleResult::default()
    };
    for entry in &entries {
        let class = prices.class(entry.storage_class.as_deref().unwrap_or("STANDARD"));
        result.cost += class.get_per_1000 / 1000.0
            + entry.size as f64 / (1u64 << 30) as f64 * class.retrieval_per_gb;
    }
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for (index, entry) in entries.into_iter().enumerate() {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let s3 = s3.clone();
        tasks.spawn(async move {
            let begun = Instant::now();
            let outcome = get_discarding(&s3, &entry).await;
            drop(slot);
            (index, outcome, begun.elapsed())
        });
    }
    let mut gets = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, Ok(bytes), latency)) => {
                result.succeeded += 1;
                result.bytes += bytes;
                gets.push(Get {
                    index,
                    latency,
                    bytes: Some(bytes),
                });
            }
            Ok((index, Err(reason), latency)) => {
                *result.failed.entry(reason).or_default() += 1;
                gets.push(Get {
                    index,
                    latency,
                    bytes: None,
                });
            }
            Err(e) => *result.failed.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    result.wall_seconds = started.elapsed().as_secs_f64();
    if let Some((objects, bytes)) = steady_rates(&mut gets, concurrency) {
        (result.objects_per_second, result.bytes_per_second) = (objects, bytes);
    } else if result.wall_seconds > 0.0 {
        result.objects_per_second = result.succeeded as f64 / result.wall_seconds;
        result.bytes_per_second = result.bytes as f64 / result.wall_seconds;
        result.rates_are_lower_bounds = true;
    }
    let mut latencies: Vec<Duration> = gets
        .iter()
        .filter(|g| g.bytes.is_some())
        .map(|g| g.latency)
        .collect();
    latencies.sort_unstable();
    result.latency_p50_ms = percentile_ms(&latencies, 0.5);
    result.latency_p90_ms = percentile_ms(&latencies, 0.9);
    result.latency_min_ms = percentile_ms(&latencies, 0.0);
    result
}

/// One sampled GET: the order it was started in, how long it took, the bytes it read (`None`
/// when it failed).
#[derive(Debug, Clone, Copy)]
struct Get {
    index: usize,
    latency: Duration,
    bytes: Option<u64>,
}

/// The rates `concurrency` GETs in flight sustain, objects and bytes per second, by Little's
/// law (throughput = in flight ÷ latency) over the GETs that ran with the window full: not the
/// first `concurrency` (they also open the connections, once per process) nor the last
/// `concurrency` (fewer and fewer in flight). `None` when the sample is too small to have such
/// GETs (fewer than twice the concurrency, and a few).
fn steady_rates(gets: &mut [Get], concurrency: usize) -> Option<(f64, f64)> {
    gets.sort_unstable_by_key(|g| g.index);
    let total = gets.len();
    let steady = gets.get(concurrency..total.checked_sub(concurrency)?)?;
    if steady.len() < MIN_STEADY_GETS {
        return None;
    }
    let seconds: f64 = steady.iter().map(|g| g.latency.as_secs_f64()).sum();
    if seconds <= 0.0 {
        return None;
    }
    let succeeded = steady.iter().filter(|g| g.bytes.is_some()).count() as f64;
    let bytes: u64 = steady.iter().filter_map(|g| g.bytes).sum();
    let in_flight = concurrency as f64;
    Some((
        in_flight * succeeded / seconds,
        in_flight * bytes as f64 / seconds,
    ))
}

/// The `q` quantile (nearest rank) of sorted durations, in milliseconds; 0 when empty.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

/// GETs one object as bundle does (its version, the size check, tags when it has any, the
/// MD5 while the body streams) and returns its size, or why it failed.
async fn get_discarding(s3: &S3, entry: &ManifestEntry<'_>) -> Result<u64, String> {
    let reason = |failure: ReadFailure| match failure {
        ReadFailure::Dlq(reason, _) => reason.to_string(),
        ReadFailure::Denied(_) => "AccessDenied".to_string(),
        ReadFailure::ChangedDuringRead => "Changed".to_string(),
        ReadFailure::Corrupt(_) => "ChecksumMismatch".to_string(),
        ReadFailure::Transient(_) => "Retry".to_string(),
        ReadFailure::Fatal(e) => format!("error: {e}"),
    };
    let (info, mut reader) = ObjectReader::open(s3, entry).await.map_err(reason)?;
    while reader.next_chunk().await.map_err(reason)?.is_some() {}
    Ok(info.size)
}

/// What `plan` counted that the projection needs.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Objects bundle GETs, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Objects copied whole.
    pub copies: u64,
    pub manifests: u64,
    /// Seconds this plan took to read the inventory (run's group does the same).
    pub inventory_seconds: f64,
    pub prefixes: u64,
}

/// The projected wall time for a number of workers.
#[derive(Debug, Clone, Serialize)]
pub struct Projection {
    pub workers: u64,
    pub seconds: f64,
    /// S3's per-prefix GET rate, not the workers, sets this time.
    pub limited_by_prefixes: bool,
}

/// The time estimate of `plan --sample`.
#[derive(Debug, Clone, Serialize)]
pub struct TimeReport {
    /// Distinct prefixes (key up to its last '/') of the selected objects.
    pub prefixes: u64,
    /// More prefixes than were counted.
    pub prefixes_at_least: bool,
    /// GETs per second S3 allows over those prefixes.
    pub prefix_get_limit_per_second: f64,
    pub inventory_seconds: f64,
    /// One worker's seconds of object GETs, per-manifest requests and copies.
    pub get_seconds: f64,
    pub manifest_seconds: f64,
    pub copy_seconds: f64,
    pub projections: Vec<Projection>,
}

/// Projects the wall time of `workload` for each worker count, from the sample's rates.
/// `None` when no sampled GET succeeded.
pub fn project(
    sample: &SampleResult,
    workload: &Workload,
    prefixes_at_least: bool,
    workers: &[u64],
) -> Option<TimeReport> {
    if sample.succeeded == 0 || sample.objects_per_second <= 0.0 {
        return None;
    }
    let by_count = workload.objects as f64 / sample.objects_per_second;
    let by_bytes = if sample.bytes_per_second > 0.0 {
        workload.bytes as f64 / sample.bytes_per_second
    } else {
        0.0
    };
    let get_seconds = by_count.max(by_bytes) * BUNDLE_OVERHEAD;
    let round_trip = sample.latency_min_ms / 1000.0;
    let manifest_seconds = workload.manifests as f64 * ROUND_TRIPS_PER_MANIFEST * round_trip;
    let copy_seconds =
        workload.copies as f64 * ROUND_TRIPS_PER_COPY * round_trip / CONCURRENT_COPIES;
    let worker_seconds = get_seconds + manifest_seconds + copy_seconds;
    let limit = GETS_PER_SECOND_PER_PREFIX * workload.prefixes.max(1) as f64;
    let projections = workers
        .iter()
        .map(|&w| {
            // A manifest is one worker's: past `manifests` workers, the rest wait.
            let busy = w.clamp(1, workload.manifests.max(1));
            let rounds = workload.manifests.max(1).div_ceil(busy) as f64;
            let spread = worker_seconds * rounds / workload.manifests.max(1) as f64;
            let floor = workload.objects as f64 / limit;
            Projection {
                workers: w,
                seconds: workload.inventory_seconds + spread.max(floor),
                limited_by_prefixes: floor > spread,
            }
        })
        .collect();
    Some(TimeReport {
        prefixes: workload.prefixes,
        prefixes_at_least,
        prefix_get_limit_per_second: limit,
        inventory_seconds: workload.inventory_seconds,
        get_seconds,
        manifest_seconds,
        copy_seconds,
        projections,
    })
}

/// The sample and the projection as a readable table.
pub fn render(sample: &SampleResult, report: Option<&TimeReport>, selected: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let bytes = crate::size::human_bytes;
    let _ = writeln!(
        out,
        "\ntime: a random sample of {} of the {selected} objects bundle reads, GET at {} in flight (nothing written)",
        sample.objects, sample.concurrency
    );
    if sample.objects < sample.requested {
        let _ = writeln!(
            out,
            "  (--sample {} is more than were selected: every object was read)",
            sample.requested
        );
    }
    let failed = if sample.failed.is_empty() {
        "none failed".to_string()
    } else {
        let reasons: Vec<String> = sample
            .failed
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        format!(
            "{} failed: {}",
            sample.failed.values().sum::<u64>(),
            reasons.join(" ")
        )
    };
    let rows = [
        (
            "sampled GETs".to_string(),
            format!("{} read, {failed}", sample.succeeded),
        ),
        (
            "wall time of the sample".to_string(),
            format!("{:.2} s", sample.wall_seconds),
        ),
        (
            format!("rate at {} in flight", sample.concurrency),
            format!(
                "{:.0} objects/s, {}/s",
                sample.objects_per_second,
                bytes(sample.bytes_per_second as u64)
            ),
        ),
        (
            "GET latency min / p50 / p90".to_string(),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                sample.latency_min_ms, sample.latency_p50_ms, sample.latency_p90_ms
            ),
        ),
        (
            "cost of the sample".to_string(),
            format!("${:.6}", sample.cost),
        ),
    ];
    for (what, value) in rows {
        let _ = writeln!(out, "  {what:<40} {value}");
    }
    if sample.rates_are_lower_bounds {
        let _ = writeln!(
            out,
            "  the sample is too small to keep bundle's concurrency in flight: its rates are\n  lower bounds (sample more than twice the concurrency for a measured rate)"
        );
    }
    let Some(report) = report else {
        let _ = writeln!(out, "  no sampled GET succeeded: no projection");
        return out;
    };
    let more = if report.prefixes_at_least {
        "at least "
    } else {
        ""
    };
    let rows = [
        (
            "prefixes (key up to its last '/')".to_string(),
            format!(
                "{more}{}: S3 allows {:.0} GETs/s over them",
                report.prefixes, report.prefix_get_limit_per_second
            ),
        ),
        (
            "reading the inventory (this plan)".to_string(),
            format!("{:.1} s", report.inventory_seconds),
        ),
        (
            "one worker: GETs, manifests, copies".to_string(),
            format!(
                "{} + {} + {}",
                human_duration(report.get_seconds),
                human_duration(report.manifest_seconds),
                human_duration(report.copy_seconds)
            ),
        ),
    ];
    for (what, value) in rows {
        let _ = writeln!(out, "  {what:<40} {value}");
    }
    for p in &report.projections {
        let what = format!(
            "projected wall time, {} worker{}",
            p.workers,
            if p.workers == 1 { "" } else { "s" }
        );
        let limited = if p.limited_by_prefixes {
            " (S3's per-prefix GET rate sets this)"
        } else {
            ""
        };
        let _ = writeln!(out, "  {what:<40} {}{limited}", human_duration(p.seconds));
    }
    out
}

/// A duration as people read it: seconds, minutes, hours or days.
pub fn human_duration(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 2.0 * 3600.0 => format!("{:.1} min", s / 60.0),
        s if s < 2.0 * 86400.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn entry(key: String) -> ManifestEntry<'static> {
        ManifestEntry {
            bucket: Cow::Borrowed("b"),
            key: Cow::Owned(key),
            size: 1,
            version_id: None,
            etag: None,
            last_modified: None,
            storage_class: None,
        }
    }

    #[test]
    fn the_reservoir_keeps_every_entry_equally_often() {
        // 20 entries, samples of 5, 20,000 times: each is kept 5,000 times on average.
        let mut kept = [0u32; 20];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut reservoir = Reservoir::new(5, rng.fork());
            for i in 0..20 {
                reservoir.offer(&entry(i.to_string()));
            }
            assert_eq!(reservoir.seen(), 20);
            let entries = reservoir.into_entries();
            assert_eq!(entries.len(), 5);
            for e in entries {
                kept[e.key.parse::<usize>().unwrap_or(0)] += 1;
            }
        }
        for (i, n) in kept.iter().enumerate() {
            assert!((4700..5300).contains(n), "entry {i} kept {n} times");
        }
    }

    #[test]
    fn a_reservoir_larger_than_its_input_keeps_everything() {
        let mut reservoir = Reservoir::new(10, fastrand::Rng::with_seed(1));
        for i in 0..3 {
            reservoir.offer(&entry(i.to_string()));
        }
        assert_eq!(reservoir.into_entries().len(), 3);
    }

    #[test]
    fn prefixes_are_keys_up_to_their_last_slash() {
        assert_eq!(prefix_of("a/b/c.txt"), "a/b/");
        assert_eq!(prefix_of("flat"), "");
        assert_eq!(prefix_of("dir/"), "dir/");
        let mut prefixes = Prefixes::default();
        for key in ["a/1", "a/2", "b/1", "top", "other"] {
            prefixes.add("bucket", key);
        }
        prefixes.add("other-bucket", "a/1");
        assert_eq!(prefixes.count(), 4);
        assert!(!prefixes.at_least());
        for i in 0..PREFIXES_COUNTED + 5 {
            prefixes.add("bucket", &format!("p{i}/k"));
        }
        assert_eq!(prefixes.count() as usize, PREFIXES_COUNTED);
        assert!(prefixes.at_least());
    }

    fn sample() -> SampleResult {
        SampleResult {
            succeeded: 1000,
            objects_per_second: 1000.0,
            bytes_per_second: 1e6,
            latency_p50_ms: 50.0,
            latency_min_ms: 20.0,
            ..SampleResult::default()
        }
    }

    #[test]
    fn one_worker_adds_gets_manifests_copies_and_the_inventory() {
        let workload = Workload {
            objects: 100_000,
            bytes: 50_000_000, // 50 s by bytes, 100 s by count
            copies: 8,
            manifests: 4,
            inventory_seconds: 3.0,
            prefixes: 100,
        };
        let report = project(&sample(), &workload, false, &[1, 2, 3, 10]).unwrap_or_else(|| {
            panic!("no report");
        });
        assert!((report.get_seconds - 100.0 * BUNDLE_OVERHEAD).abs() < 1e-9);
        assert!((report.manifest_seconds - 4.0 * 17.0 * 0.02).abs() < 1e-9);
        assert!((report.copy_seconds - 8.0 * 4.0 * 0.02 / 4.0).abs() < 1e-9);
        let one = 100.0 * BUNDLE_OVERHEAD + 1.36 + 0.16;
        let seconds: Vec<f64> = report.projections.iter().map(|p| p.seconds).collect();
        assert!((seconds[0] - (3.0 + one)).abs() < 1e-9);
        assert!((seconds[1] - (3.0 + one / 2.0)).abs() < 1e-9);
        // 3 workers on 4 manifests: two rounds.
        assert!((seconds[2] - (3.0 + one / 2.0)).abs() < 1e-9);
        // More workers than manifests: one manifest each.
        assert!((seconds[3] - (3.0 + one / 4.0)).abs() < 1e-9);
        assert!(report.projections.iter().all(|p| !p.limited_by_prefixes));
    }

    #[test]
    fn bytes_dominate_when_they_take_longer_and_prefixes_cap_the_fleet() {
        let workload = Workload {
            objects: 11_000_000,
            bytes: 400_000_000_000,
            copies: 0,
            manifests: 1000,
            inventory_seconds: 0.0,
            prefixes: 1,
        };
        let report = project(&sample(), &workload, false, &[1, 1000]).unwrap_or_else(|| {
            panic!("no report");
        });
        assert!((report.get_seconds - 400_000.0 * BUNDLE_OVERHEAD).abs() < 1e-6);
        // 11 million GETs at 5,500 a second: 2,000 s, whatever the fleet.
        let fleet = &report.projections[1];
        assert!(fleet.limited_by_prefixes);
        assert!((fleet.seconds - 2000.0).abs() < 1e-6);
        assert!(!report.projections[0].limited_by_prefixes);
    }

    #[test]
    fn no_projection_without_a_successful_get() {
        let failed = SampleResult {
            failed: BTreeMap::from([("NoSuchKey".to_string(), 3)]),
            ..SampleResult::default()
        };
        let workload = Workload {
            objects: 1,
            bytes: 1,
            copies: 0,
            manifests: 1,
            inventory_seconds: 0.0,
            prefixes: 1,
        };
        assert!(project(&failed, &workload, false, &[1]).is_none());
    }

    fn gets(latencies_ms: &[u64]) -> Vec<Get> {
        latencies_ms
            .iter()
            .enumerate()
            .map(|(index, ms)| Get {
                index,
                latency: Duration::from_millis(*ms),
                bytes: Some(1000),
            })
            .collect()
    }

    #[test]
    fn steady_rates_leave_out_the_first_and_last_windows() {
        // 10 in flight: the first 10 (slow: connecting) and the last 10 are left out; the 20
        // between take 20 ms each, so 10 in flight complete 500 a second.
        let mut all = gets(&[&[500; 10][..], &[20; 20], &[5; 10]].concat());
        all.reverse();
        let (objects, bytes) = steady_rates(&mut all, 10).unwrap_or_default();
        assert!((objects - 500.0).abs() < 1e-6, "{objects}");
        assert!((bytes - 500_000.0).abs() < 1e-3, "{bytes}");
        // A failed GET held its slot but read nothing.
        all[15].bytes = None;
        let (objects, _) = steady_rates(&mut all, 10).unwrap_or_default();
        assert!((objects - 475.0).abs() < 1e-6, "{objects}");
        // Too small to have a full window for long: no steady rate.
        assert!(steady_rates(&mut gets(&[20; 35]), 10).is_none());
        assert!(steady_rates(&mut gets(&[20; 5]), 10).is_none());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert!((percentile_ms(&sorted, 0.5) - 5.0).abs() < 1e-9);
        assert!((percentile_ms(&sorted, 0.9) - 9.0).abs() < 1e-9);
        assert!((percentile_ms(&sorted, 0.0) - 1.0).abs() < 1e-9);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
