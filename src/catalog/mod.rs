//! The catalog: which bundle manifest (and so which archive) may hold a source key, without
//! reading every index. Pure: formats and lookups; [`store`] reads and writes it on S3.
//!
//! Every grouping run (`group`, `run`, `redrive`) records, beside its manifests, the key range
//! of each manifest it wrote: a *run* file of [`CatalogEntry`] lines. The runs of a source
//! bucket are compacted into *generations*: every entry of every run so far, sorted by first key
//! and cut into pages, and a small page table (its commit marker) that gives each page's first
//! key and the largest last key of the pages up to it. A lookup reads the page table, then only
//! the pages whose range can hold the key, then the few indexes those entries name.
//!
//! Incremental runs and redrives group a few changed keys over a wide range; their entries
//! carry a [`filter::KeyFilter`] of their keys and are paged apart from full runs' narrow ones,
//! so a lookup of one key reads one or two indexes however many weeks have run.
//!
//! The catalog names manifests, never archives: an archive is reported only after its index
//! (the commit marker of a bundle) is read, so the catalog cannot point at an uncommitted one.

pub mod filter;
pub mod store;

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{join_prefix, ManifestEntry};
use filter::KeyFilter;

/// Where the catalog of `source` lives under the manifests' prefix. Not a manifest: no
/// `.index` suffix, and verify skips the folder.
pub fn catalog_folder(manifest_prefix: &str, source: &str) -> String {
    join_prefix(manifest_prefix, &format!("{CATALOG_FOLDER}/{source}"))
}

/// The folder beside the manifests that holds catalogs.
pub const CATALOG_FOLDER: &str = "_catalog";

/// Pages of a generation are cut at about this many bytes: a lookup reads one or two.
pub const PAGE_BYTES: usize = 64 << 10;

/// One bundle manifest's key range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The manifest's key in the manifests' bucket.
    pub manifest: String,
    /// Its smallest and largest source key (S3's byte order).
    pub first: String,
    pub last: String,
    pub objects: u64,
    pub bytes: u64,
    /// A [`KeyFilter`] of its keys, in text form: kept for manifests whose keys are sparse in
    /// their range (incremental runs, redrives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// Whether a catalog entry keeps a filter of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    RangeOnly,
    Filtered,
}

impl CatalogEntry {
    /// The entry of a manifest's rows of `source`; `None` when it has none.
    pub fn of_rows(
        manifest: &str,
        source: &str,
        rows: &[ManifestEntry<'_>],
        keys: Keys,
    ) -> Option<CatalogEntry> {
        let of_source = || rows.iter().filter(|row| row.bucket == source);
        let mut entry: Option<CatalogEntry> = None;
        for row in of_source() {
            let key = row.key.as_ref();
            match entry.as_mut() {
                None => {
                    entry = Some(CatalogEntry {
                        manifest: manifest.to_string(),
                        first: key.to_string(),
                        last: key.to_string(),
                        objects: 1,
                        bytes: row.size,
                        filter: None,
                    })
                }
                Some(entry) => {
                    if key < entry.first.as_str() {
                        entry.first = key.to_string();
                    }
                    if key > entry.last.as_str() {
                        entry.last = key.to_string();
                    }
                    entry.objects += 1;
                    entry.bytes += row.size;
                }
            }
        }
        if let (Some(entry), Keys::Filtered) = (entry.as_mut(), keys) {
            let mut filter = KeyFilter::with_capacity(entry.objects as usize);
            for row in of_source() {
                filter.insert(&row.key);
            }
            entry.filter = Some(filter.encode());
        }
        entry
    }

    /// The entry of a manifest's body (as `group` writes it) for its rows of `source`.
    pub fn of_manifest(
        manifest: &str,
        source: &str,
        body: &[u8],
        keys: Keys,
    ) -> Result<Option<CatalogEntry>> {
        let rows = crate::manifest::parse_manifest(body, manifest)?;
        Ok(CatalogEntry::of_rows(manifest, source, &rows, keys))
    }

    /// True when a key of `query` can be in this manifest: in its range and, for one key, in
    /// its filter.
    pub fn may_hold(&self, query: &KeyQuery) -> bool {
        if !query.overlaps(&self.first, &self.last) {
            return false;
        }
        match (query, self.filter.as_deref().and_then(KeyFilter::decode)) {
            (KeyQuery::Key(key), Some(filter)) => filter.may_hold(key),
            _ => true,
        }
    }

    fn order(&self, other: &Self) -> Ordering {
        (&self.first, &self.last, &self.manifest).cmp(&(&other.first, &other.last, &other.manifest))
    }
}

/// What a lookup asks for: one key, or every key under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyQuery {
    Key(String),
    Prefix(String),
}

impl KeyQuery {
    /// What `command` was asked for: `s3://SOURCE_BUCKET/KEY`, or `s3://SOURCE_BUCKET` with
    /// `--prefix P`.
    pub fn of_object(command: &str, key: &str, prefix: Option<&str>) -> Result<KeyQuery> {
        match (prefix, key) {
            (Some(prefix), "") => Ok(KeyQuery::Prefix(prefix.to_string())),
            (None, key) if !key.is_empty() => Ok(KeyQuery::Key(key.to_string())),
            (Some(_), _) => Err(Error::Usage(format!(
                "{command}: give either s3://SOURCE_BUCKET/KEY or s3://SOURCE_BUCKET with \
                 --prefix P, not both"
            ))),
            (None, _) => Err(Error::Usage(format!(
                "{command}: the URI names no key: give s3://SOURCE_BUCKET/KEY, or \
                 s3://SOURCE_BUCKET with --prefix P"
            ))),
        }
    }

    /// True when the range `first..=last` holds a key of the query.
    pub fn overlaps(&self, first: &str, last: &str) -> bool {
        match self {
            KeyQuery::Key(key) => first <= key.as_str() && key.as_str() <= last,
            // The keys under P are the interval [P, P⁺): it meets the range when the range
            // ends at or after P and starts before P⁺ (before P, or under P).
            KeyQuery::Prefix(prefix) => {
                last >= prefix.as_str() && (first < prefix.as_str() || first.starts_with(prefix))
            }
        }
    }

    /// True when `key` is one the query asks for.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyQuery::Key(wanted) => key == wanted,
            KeyQuery::Prefix(prefix) => key.starts_with(prefix.as_str()),
        }
    }
}

/// Entries as JSON lines, sorted, without repeats of one manifest.
pub fn encode_entries(entries: &[CatalogEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        // A struct of strings and integers always serializes.
        if let Ok(line) = serde_json::to_vec(entry) {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    out
}

/// Reads JSON lines of entries.
pub fn decode_entries(bytes: &[u8], location: &str) -> Result<Vec<CatalogEntry>> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| {
            serde_json::from_slice(line).map_err(|e| {
                Error::bad_input(
                    location,
                    format!("line {} is not a catalog entry: {e}", n + 1),
                )
            })
        })
        .collect()
}

/// Sorts by first key, with one entry per manifest: two records of one manifest (a run
/// recorded twice, a redrive recorded by two racing redrives) become one whose range holds both.
pub fn sort_entries(entries: &mut Vec<CatalogEntry>) {
    let mut by_manifest: std::collections::HashMap<String, CatalogEntry> =
        std::collections::HashMap::with_capacity(entries.len());
    for entry in entries.drain(..) {
        match by_manifest.get_mut(&entry.manifest) {
            None => {
                by_manifest.insert(entry.manifest.clone(), entry);
            }
            Some(kept) => {
                if entry.first < kept.first {
                    kept.first = entry.first;
                }
                if entry.last > kept.last {
                    kept.last = entry.last;
                }
                kept.objects = kept.objects.max(entry.objects);
                kept.bytes = kept.bytes.max(entry.bytes);
                // Records of different rows: neither filter holds all the keys.
                if kept.filter != entry.filter {
                    kept.filter = None;
                }
            }
        }
    }
    entries.extend(by_manifest.into_values());
    entries.sort_by(CatalogEntry::order);
}

/// One page of a generation's entries object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Byte range in the entries object.
    pub offset: u64,
    pub length: u64,
    /// The smallest first key of its entries.
    pub first: String,
    /// The largest last key of its entries (not the last entry's: entries are sorted by first
    /// key only).
    pub last: String,
    pub entries: u64,
}

/// A generation's page table: its commit marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageTable {
    pub generation: u64,
    pub source: String,
    /// The run files it holds, by name.
    pub runs: Vec<String>,
    pub entries: u64,
    pub objects: u64,
    pub bytes: u64,
    /// The entries object, under the catalog folder.
    pub entries_key: String,
    /// Its size.
    pub entries_bytes: u64,
    pub pages: Vec<Page>,
}

impl PageTable {
    /// The byte ranges of the pages that can hold a key of `query`, adjacent pages joined, so
    /// that each range is one GET.
    pub fn ranges_for(&self, query: &KeyQuery) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        // A page's entries start at or after its first key and end at most at its last.
        for page in self
            .pages
            .iter()
            .filter(|page| query.overlaps(&page.first, &page.last))
        {
            match ranges.last_mut() {
                Some((_, end)) if *end == page.offset => *end = page.offset + page.length,
                _ => ranges.push((page.offset, page.offset + page.length)),
            }
        }
        ranges
    }
}

/// A generation: its entries object and its page table.
pub struct Generation {
    pub entries: Vec<u8>,
    pub table: PageTable,
}

/// The order of a generation's entries: range-only entries, then filtered ones (wide and
/// sparse, in pages of their own: a page's range is the union of its entries', and one wide
/// entry among narrow ones would make every lookup read that page), each by first key.
pub fn generation_order(a: &CatalogEntry, b: &CatalogEntry) -> Ordering {
    (a.filter.is_some(), &a.first, &a.last, &a.manifest).cmp(&(
        b.filter.is_some(),
        &b.first,
        &b.last,
        &b.manifest,
    ))
}

/// Builds a generation entry by entry, in [`generation_order`], so that a compaction can
/// stream one: each entry's line is handed back to be written, and the page table is kept.
pub struct GenerationBuilder {
    table: PageTable,
    /// Whether the last page holds filtered entries.
    filtered_page: bool,
}

impl GenerationBuilder {
    /// Generation `generation` of `source`, holding `runs`, stored at `entries_key` under the
    /// catalog folder.
    pub fn new(generation: u64, source: &str, runs: Vec<String>, entries_key: String) -> Self {
        GenerationBuilder {
            table: PageTable {
                generation,
                source: source.to_string(),
                runs,
                entries: 0,
                objects: 0,
                bytes: 0,
                entries_key,
                entries_bytes: 0,
                pages: Vec::new(),
            },
            filtered_page: false,
        }
    }

    /// Adds `entry`; returns its line for the entries object.
    pub fn push(&mut self, entry: &CatalogEntry) -> Vec<u8> {
        let line = encode_entries(std::slice::from_ref(entry));
        let table = &mut self.table;
        let (offset, length) = (table.entries_bytes, line.len() as u64);
        table.entries += 1;
        table.objects += entry.objects;
        table.bytes += entry.bytes;
        table.entries_bytes += length;
        let filtered = entry.filter.is_some();
        match table.pages.last_mut() {
            Some(page) if page.length < PAGE_BYTES as u64 && filtered == self.filtered_page => {
                page.length += length;
                page.entries += 1;
                // Smallest first and largest last: a page's range holds every entry's, in
                // whatever order they came.
                if entry.first < page.first {
                    page.first = entry.first.clone();
                }
                if entry.last > page.last {
                    page.last = entry.last.clone();
                }
            }
            _ => table.pages.push(Page {
                offset,
                length,
                first: entry.first.clone(),
                last: entry.last.clone(),
                entries: 1,
            }),
        }
        self.filtered_page = filtered;
        line
    }

    pub fn finish(self) -> PageTable {
        self.table
    }
}

/// Builds generation `generation` of `source` from entries (see [`sort_entries`]) in memory,
/// to be stored at `entries_key` under the catalog folder.
pub fn build_generation(
    generation: u64,
    source: &str,
    runs: Vec<String>,
    entries: &[CatalogEntry],
    entries_key: String,
) -> Generation {
    let mut ordered: Vec<&CatalogEntry> = entries.iter().collect();
    ordered.sort_by(|a, b| generation_order(a, b));
    let mut builder = GenerationBuilder::new(generation, source, runs, entries_key);
    let mut body = Vec::new();
    for entry in ordered {
        body.extend_from_slice(&builder.push(entry));
    }
    Generation {
        table: builder.finish(),
        entries: body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(manifest: &str, first: &str, last: &str) -> CatalogEntry {
        CatalogEntry {
            manifest: manifest.to_string(),
            first: first.to_string(),
            last: last.to_string(),
            objects: 1,
            bytes: 1,
            filter: None,
        }
    }

    #[test]
    fn a_manifest_range_is_its_smallest_and_largest_key_of_the_source() {
        let body = b"src,b/2,3\nsrc,a/9,4\nother,0,5\nsrc,c,1\n";
        let entry = CatalogEntry::of_manifest("m.0.index", "src", body, Keys::RangeOnly)
            .expect("parsed")
            .expect("rows");
        assert_eq!((entry.first.as_str(), entry.last.as_str()), ("a/9", "c"));
        assert_eq!((entry.objects, entry.bytes), (3, 8));
        assert_eq!(entry.filter, None);
        assert_eq!(
            CatalogEntry::of_manifest("m", "none", body, Keys::Filtered).expect("parsed"),
            None
        );
        assert!(
            CatalogEntry::of_manifest("m", "src", b"src,a,notasize\n", Keys::Filtered).is_err()
        );
    }

    #[test]
    fn a_query_is_a_key_or_a_bucket_with_a_prefix_never_both_or_neither() {
        assert_eq!(
            KeyQuery::of_object("locate", "a/b", None).expect("key"),
            KeyQuery::Key("a/b".to_string())
        );
        assert_eq!(
            KeyQuery::of_object("locate", "", Some("a/")).expect("prefix"),
            KeyQuery::Prefix("a/".to_string())
        );
        let both = KeyQuery::of_object("restore", "a/b", Some("a/")).expect_err("both");
        assert!(both.to_string().contains("not both"), "{both}");
        let neither = KeyQuery::of_object("cat", "", None).expect_err("neither");
        assert!(
            neither.to_string().starts_with("cat: the URI names no key"),
            "{neither}"
        );
    }

    #[test]
    fn prefix_queries_meet_ranges_that_start_before_or_under_the_prefix() {
        let prefix = KeyQuery::Prefix("b/".to_string());
        assert!(prefix.overlaps("a", "b/0"));
        assert!(prefix.overlaps("b/5", "z"));
        assert!(prefix.overlaps("a", "z"));
        assert!(!prefix.overlaps("a", "b"));
        assert!(!prefix.overlaps("b0", "c"));
        let key = KeyQuery::Key("m".to_string());
        assert!(key.overlaps("m", "m") && key.overlaps("a", "z") && !key.overlaps("n", "z"));
    }

    #[test]
    fn entries_decode_as_encoded_and_bad_lines_are_named() {
        let entries = vec![entry("m1", "a\nb", "c\"d"), entry("m2", "é", "ü")];
        let bytes = encode_entries(&entries);
        assert_eq!(decode_entries(&bytes, "x").expect("decoded"), entries);
        let error = decode_entries(b"{\"manifest\":1}\n", "s3://b/run").expect_err("bad");
        assert!(error.to_string().contains("line 1"), "{error}");
    }

    #[test]
    fn two_records_of_one_manifest_become_one_that_holds_both_ranges() {
        let mut entries = vec![
            entry("m2", "b", "c"),
            entry("m1", "a", "b"),
            entry("m2", "c", "d"),
        ];
        sort_entries(&mut entries);
        assert_eq!(entries, vec![entry("m1", "a", "b"), entry("m2", "b", "d")]);
    }

    fn keys() -> impl Strategy<Value = String> {
        "[a-d]{1,4}"
    }

    /// An entry of keys `keys`, filtered or not.
    fn entry_of_keys(manifest: &str, keys: &[String], filtered: bool) -> CatalogEntry {
        let rows: Vec<ManifestEntry> = keys
            .iter()
            .map(|key| ManifestEntry::of_key("src", key, 1))
            .collect();
        let keys = if filtered {
            Keys::Filtered
        } else {
            Keys::RangeOnly
        };
        CatalogEntry::of_rows(manifest, "src", &rows, keys).expect("rows")
    }

    proptest! {
        /// The pages a lookup reads hold every entry that holds the key: none is missed,
        /// however ranges overlap (incremental runs, redrives) and whichever entries are
        /// filtered; and a filtered entry is never missed for a key it holds.
        #[test]
        fn lookups_read_every_page_that_holds_the_key(
            manifests in proptest::collection::vec(
                (proptest::collection::vec(keys(), 1..20), proptest::bool::ANY), 1..300),
            query in keys(),
            prefix in proptest::bool::ANY,
        ) {
            let mut entries: Vec<CatalogEntry> = manifests
                .iter()
                .enumerate()
                .map(|(n, (keys, filtered))| entry_of_keys(&format!("m{n}"), keys, *filtered))
                .collect();
            sort_entries(&mut entries);
            let generation = build_generation(1, "src", Vec::new(), &entries, "e".to_string());
            let query = if prefix { KeyQuery::Prefix(query) } else { KeyQuery::Key(query) };
            let mut found = Vec::new();
            for (start, end) in generation.table.ranges_for(&query) {
                let page = &generation.entries[start as usize..end as usize];
                found.extend(decode_entries(page, "page").expect("page").into_iter().filter(|e| e.may_hold(&query)));
            }
            found.sort_by(CatalogEntry::order);
            let expected: Vec<CatalogEntry> =
                entries.iter().filter(|e| e.may_hold(&query)).cloned().collect();
            prop_assert_eq!(&found, &expected);
            let found: std::collections::BTreeSet<&str> =
                found.iter().map(|e| e.manifest.as_str()).collect();
            for (n, (keys, _)) in manifests.iter().enumerate() {
                if keys.iter().any(|key| query.matches(key)) {
                    prop_assert!(found.contains(format!("m{n}").as_str()), "m{} missed", n);
                }
            }
        }
    }

    #[test]
    fn a_filtered_entry_is_a_candidate_for_its_keys_only() {
        let keys: Vec<String> = (0..100).map(|n| format!("k{:04}", n * 10)).collect();
        let filtered = entry_of_keys("m", &keys, true);
        let plain = entry_of_keys("m", &keys, false);
        let key = |k: &str| KeyQuery::Key(k.to_string());
        assert!(filtered.may_hold(&key("k0500")) && plain.may_hold(&key("k0505")));
        let strays = (0..1000)
            .filter(|n| n % 10 != 0 && filtered.may_hold(&key(&format!("k{n:04}"))))
            .count();
        assert!(strays < 50, "{strays} of 900 keys in range pass the filter");
        // A prefix cannot be tested against a filter of whole keys.
        assert!(filtered.may_hold(&KeyQuery::Prefix("k05".to_string())));
    }

    #[test]
    fn records_of_one_manifest_with_different_keys_keep_no_filter() {
        let a = entry_of_keys("m", &["a".to_string(), "c".to_string()], true);
        let b = entry_of_keys("m", &["b".to_string()], true);
        let mut entries = vec![a.clone(), a.clone()];
        sort_entries(&mut entries);
        assert_eq!(entries, vec![a.clone()]);
        let mut entries = vec![a, b];
        sort_entries(&mut entries);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].filter, None);
        assert!(entries[0].may_hold(&KeyQuery::Key("b".to_string())));
    }

    #[test]
    fn filtered_entries_are_paged_apart_from_narrow_ones() {
        let mut entries: Vec<CatalogEntry> = (0..5_000)
            .map(|n| {
                entry(
                    &format!("full.{n}"),
                    &format!("k{n:05}a"),
                    &format!("k{n:05}z"),
                )
            })
            .collect();
        // Weekly runs whose few keys start all over the range and run to its end.
        for week in 0..20 {
            let sparse: Vec<String> = (week * 250..5_000)
                .step_by(97)
                .map(|n| format!("k{n:05}m"))
                .collect();
            entries.push(entry_of_keys(&format!("week.{week}"), &sparse, true));
        }
        sort_entries(&mut entries);
        let generation = build_generation(1, "src", Vec::new(), &entries, "e".to_string());
        let pages = generation.table.pages.len() as u64;
        let ranges = generation
            .table
            .ranges_for(&KeyQuery::Key("k04000b".to_string()));
        let read: u64 = ranges.iter().map(|(start, end)| end - start).sum();
        let filtered: u64 = generation
            .table
            .pages
            .iter()
            .filter(|page| page.first.ends_with('m'))
            .map(|page| page.length)
            .sum();
        assert!(pages > 4, "{pages} pages");
        assert!(
            read <= PAGE_BYTES as u64 + 200 + filtered,
            "read {read} bytes of {} in {ranges:?}",
            generation.entries.len()
        );
    }

    #[test]
    fn pages_are_cut_near_their_size_and_a_key_reads_few() {
        let entries: Vec<CatalogEntry> = (0..10_000)
            .map(|n| {
                entry(
                    &format!("p/m.{n}.index"),
                    &format!("k{n:06}a"),
                    &format!("k{n:06}z"),
                )
            })
            .collect();
        let generation = build_generation(1, "src", vec!["r".into()], &entries, "e".to_string());
        let table = &generation.table;
        assert!(table.pages.len() > 10, "{} pages", table.pages.len());
        assert!(table
            .pages
            .iter()
            .all(|p| p.length <= (PAGE_BYTES + 200) as u64));
        assert_eq!(table.entries_bytes, generation.entries.len() as u64);
        let ranges = table.ranges_for(&KeyQuery::Key("k005000m".to_string()));
        assert_eq!(ranges.len(), 1);
        assert!(table
            .ranges_for(&KeyQuery::Key("zz".to_string()))
            .is_empty());
    }
}
