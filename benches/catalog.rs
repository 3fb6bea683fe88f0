//! The catalog's size and the requests `locate` makes, for buckets of the sizes given
//! (`--objects N`, repeatable; default 1M and 100M), grouped once in full and then by weekly
//! incremental runs: computed with the catalog's own format and page search, no server.
//!
//!   cargo bench --bench catalog -- [--objects N]... [--per-manifest N] [--weeks N] [--changed-percent P]

use s3bundler::catalog::filter::KeyFilter;
use s3bundler::catalog::{build_generation, sort_entries, CatalogEntry, KeyQuery};

fn main() {
    let mut objects = Vec::new();
    let (mut per_manifest, mut weeks, mut changed_percent) = (10_000u64, 52u64, 1.0f64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let number = || {
            value.parse::<f64>().unwrap_or_else(|_| {
                eprintln!("{flag} takes a number, not `{value}`");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--objects" => objects.push(number() as u64),
            "--per-manifest" => per_manifest = number() as u64,
            "--weeks" => weeks = number() as u64,
            "--changed-percent" => changed_percent = number(),
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2)
            }
        }
    }
    if objects.is_empty() {
        objects = vec![1_000_000, 100_000_000];
    }
    for objects in objects {
        bench_catalog(objects, per_manifest.max(1), weeks, changed_percent);
    }
}

/// The catalog of a bucket of `objects` keys `k000000000042`: one full run, then `weeks` runs
/// that each group `changed_percent` of the keys, spread evenly from a different offset each
/// week (their manifests span 100/`changed_percent` times the keys of a full run's, and keep a
/// filter of their keys, as `group` writes them). Prints its size after the first run and after
/// all, and the requests and bytes of lookups spread over the keys.
fn bench_catalog(objects: u64, per_manifest: u64, weeks: u64, changed_percent: f64) {
    let key = |n: u64| format!("photos/{n:012}.jpg");
    let mut entries = Vec::new();
    let run = |entries: &mut Vec<CatalogEntry>, label: &str, start: u64, stride: u64| {
        let filtered = stride > 1;
        let span = per_manifest * stride;
        let mut first = start;
        let mut number = 0;
        while first < objects {
            let last = (first + span - stride).min(objects - 1);
            let filter = filtered.then(|| {
                let keys: Vec<String> = (first..=last).step_by(stride as usize).map(key).collect();
                KeyFilter::of_keys(keys.iter().map(String::as_str)).encode()
            });
            entries.push(CatalogEntry {
                manifest: format!("manifests/inventory-{label}-manifest.{number}.index"),
                first: key(first),
                last: key(last),
                objects: (last - first) / stride + 1,
                bytes: ((last - first) / stride + 1) * 50_000,
                filter,
            });
            first += span;
            number += 1;
        }
    };
    let stride = (100.0 / changed_percent).round().max(1.0) as u64;
    let report = |entries: &mut Vec<CatalogEntry>, after: &str| {
        sort_entries(entries);
        let generation = build_generation(1, "photos", Vec::new(), entries, "e".to_string());
        let table = serde_json::to_vec(&generation.table).unwrap_or_default();
        let probes: Vec<String> = (0..1000)
            .map(|i| key((i * (objects / 1000).max(1) + 7 * i + 13) % objects))
            .chain([key(0), key(objects - 1), "photos/missing".to_string()])
            .collect();
        let (mut total, mut most, mut candidates_most, mut read) = (0u64, 0u64, 0usize, 0u64);
        for probe in &probes {
            let query = KeyQuery::Key(probe.clone());
            let ranges = generation.table.ranges_for(&query);
            read += ranges.iter().map(|(start, end)| end - start).sum::<u64>();
            let candidates = entries.iter().filter(|e| e.may_hold(&query)).count();
            // LIST, page table, one GET per range, the index of every candidate, then a LIST
            // of the archive's name and a HEAD of the archive that holds the key.
            let requests = 2 + ranges.len() as u64 + candidates as u64 + 2;
            total += requests;
            most = most.max(requests);
            candidates_most = candidates_most.max(candidates);
        }
        println!(
            "catalog {objects} objects, {after}: {} manifests, entries {:.0} KiB in {} pages, page table {:.1} KiB; lookup requests mean {:.1}, max {most} (at most {candidates_most} candidate manifests), catalog pages read mean {:.0} KiB",
            entries.len(),
            generation.entries.len() as f64 / 1024.0,
            generation.table.pages.len(),
            table.len() as f64 / 1024.0,
            total as f64 / probes.len() as f64,
            read as f64 / probes.len() as f64 / 1024.0,
        );
    };
    run(&mut entries, "full", 0, 1);
    report(&mut entries, "one full run");
    for week in 1..=weeks {
        let offset = (week * 7919) % stride;
        run(&mut entries, &format!("week{week}"), offset, stride);
    }
    report(
        &mut entries,
        &format!("then {weeks} weekly runs of {changed_percent}%"),
    );
}
