//! Bundle manifests: the CSV files `group` writes and `bundle` reads, and their names.
//!
//! One object per line, no header, columns `Bucket,Key,Size,VersionId,ETag,LastModifiedDate,
//! StorageClass`, the key URL-encoded as in a CSV inventory so that every line is one physical
//! line. Manifests of the original tools (`Bucket,Key,Size`) are read too.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::key_encoding::{decode_key, encode_key};
use crate::s3::over_s3_limits;

/// One object of a bundle manifest. The key is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry<'a> {
    pub bucket: Cow<'a, str>,
    pub key: Cow<'a, str>,
    pub size: u64,
    pub version_id: Option<Cow<'a, str>>,
    pub etag: Option<Cow<'a, str>>,
    pub last_modified: Option<Cow<'a, str>>,
    pub storage_class: Option<Cow<'a, str>>,
}

impl<'a> ManifestEntry<'a> {
    /// An entry naming the current version of `key`, with no ETag, date or class.
    pub fn of_key(bucket: &'a str, key: &'a str, size: u64) -> Self {
        ManifestEntry {
            bucket: bucket.into(),
            key: key.into(),
            size,
            version_id: None,
            etag: None,
            last_modified: None,
            storage_class: None,
        }
    }

    pub fn into_owned(self) -> ManifestEntry<'static> {
        let own = |c: Option<Cow<'_, str>>| c.map(|v| Cow::Owned(v.into_owned()));
        ManifestEntry {
            bucket: Cow::Owned(self.bucket.into_owned()),
            key: Cow::Owned(self.key.into_owned()),
            size: self.size,
            version_id: own(self.version_id),
            etag: own(self.etag),
            last_modified: own(self.last_modified),
            storage_class: own(self.storage_class),
        }
    }
}

/// Accumulates manifest lines in memory (a manifest holds at most `-c` objects).
#[derive(Default)]
pub struct ManifestWriter {
    body: Vec<u8>,
    objects: u64,
    bytes: u64,
}

/// Appends `entry` to `out` as one manifest line, newline included.
pub fn write_line(out: &mut Vec<u8>, entry: &ManifestEntry<'_>) {
    let mut size = itoa::Buffer::new();
    let key = encode_key(&entry.key);
    let fields = [
        entry.bucket.as_ref(),
        key.as_ref(),
        size.format(entry.size),
        text_or_empty(&entry.version_id),
        text_or_empty(&entry.etag),
        text_or_empty(&entry.last_modified),
        text_or_empty(&entry.storage_class),
    ];
    // The encoded key and the size never need quoting.
    if [0, 3, 4, 5, 6]
        .iter()
        .all(|&i| !needs_quoting(fields[i].as_bytes()))
    {
        // The common case, measured as the parser's hot spot: plain fields, written as they are.
        out.reserve(fields.iter().map(|f| f.len() + 1).sum());
        for (n, field) in fields.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(field.as_bytes());
        }
        out.push(b'\n');
    } else {
        // Rare: a field that needs RFC 4180 quoting goes through the csv writer.
        let mut quoted = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        let _ = quoted.write_record(fields);
        let _ = quoted.flush();
    }
}

fn is_special(byte: u8) -> bool {
    matches!(byte, b',' | b'"' | b'\r' | b'\n')
}

/// True when `text` holds a byte that CSV must quote (`,` `"` CR LF). Eight bytes at a time,
/// because it runs over five fields of every manifest line and was the writer's hot loop.
fn needs_quoting(text: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `word` equals `byte` (the zero-byte test is exact for "any").
    let holds = |word: u64, byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS != 0
    };
    let mut words = text.chunks_exact(8);
    for chunk in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        if holds(word, b',') || holds(word, b'"') || holds(word, b'\r') || holds(word, b'\n') {
            return true;
        }
    }
    words.remainder().iter().copied().any(is_special)
}

impl ManifestWriter {
    pub fn push(&mut self, entry: &ManifestEntry<'_>) {
        write_line(&mut self.body, entry);
        self.objects += 1;
        self.bytes = self.bytes.saturating_add(entry.size);
    }

    /// Appends a line made by [`write_line`] for an object of `size` bytes.
    pub fn push_line(&mut self, line: &[u8], size: u64) {
        self.body.extend_from_slice(line);
        self.objects += 1;
        self.bytes = self.bytes.saturating_add(size);
    }

    pub fn objects(&self) -> u64 {
        self.objects
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The manifest's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.body
    }
}

fn text_or_empty<'a>(value: &'a Option<Cow<'_, str>>) -> &'a str {
    value.as_deref().unwrap_or("")
}

/// Parses a whole bundle manifest; `location` names it in errors. Lines are numbered from 1.
pub fn parse_manifest<'a>(bytes: &'a [u8], location: &str) -> Result<Vec<ManifestEntry<'a>>> {
    manifest_entries(bytes, location).collect()
}

/// The entries of a bundle manifest read one at a time from `reader`: a manifest of millions
/// of lines is never held whole. Ends after the first error.
pub fn manifest_entries<R: std::io::Read>(reader: R, location: &str) -> ManifestEntries<R> {
    ManifestEntries {
        reader: csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(reader),
        record: csv::ByteRecord::new(),
        line: 0,
        location: location.to_string(),
        failed: false,
    }
}

/// See [`manifest_entries`].
pub struct ManifestEntries<R> {
    reader: csv::Reader<R>,
    record: csv::ByteRecord,
    line: u64,
    location: String,
    failed: bool,
}

impl<R: std::io::Read> Iterator for ManifestEntries<R> {
    type Item = Result<ManifestEntry<'static>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.line += 1;
        let entry = match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => return None,
            // The body stopped coming (a download cut off), not a damaged manifest.
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => Err(Error::Remote {
                operation: "GetObject",
                location: self.location.clone(),
                detail: format!("read cut off at line {}: {e}", self.line),
            }),
            Err(e) => Err(self.bad(format!("malformed CSV: {e}"))),
            Ok(true) => self.entry(),
        };
        self.failed = entry.is_err();
        Some(entry)
    }
}

impl<R> ManifestEntries<R> {
    fn bad(&self, detail: String) -> Error {
        Error::bad_input(format!("{} line {}", self.location, self.line), detail)
    }

    /// The entry of the record just read.
    fn entry(&self) -> Result<ManifestEntry<'static>> {
        let record = &self.record;
        let bad = |detail: String| self.bad(detail);
        if record.len() != 3 && record.len() != 7 {
            return Err(bad(format!(
                "{} fields; a bundle manifest line has 7 (Bucket,Key,Size,VersionId,ETag,LastModifiedDate,StorageClass) or 3 (Bucket,Key,Size)",
                record.len()
            )));
        }
        let text = |i: usize| -> Result<Option<Cow<'static, str>>> {
            match record.get(i) {
                None | Some(b"") => Ok(None),
                Some(field) => std::str::from_utf8(field)
                    .map(|s| Some(Cow::Owned(s.to_string())))
                    .map_err(|_| bad(format!("field {} is not UTF-8", i + 1))),
            }
        };
        let bucket = text(0)?.ok_or_else(|| bad("Bucket is empty".into()))?;
        let key = decode_key(&record[1])
            .map_err(|e| bad(format!("Key: {e}")))?
            .into_owned();
        if key.is_empty() {
            return Err(bad("Key is empty".into()));
        }
        let version_id = text(3)?;
        if let Some(why) = over_s3_limits(&key, version_id.as_deref()) {
            return Err(bad(why));
        }
        let size_text = text(2)?.unwrap_or_default();
        let size = size_text
            .parse::<u64>()
            .map_err(|_| bad(format!("Size `{size_text}` is not a whole number")))?;
        Ok(ManifestEntry {
            bucket,
            key: Cow::Owned(key),
            size,
            version_id,
            etag: text(4)?,
            last_modified: text(5)?,
            storage_class: text(6)?,
        })
    }
}

impl<R: std::io::Read> ManifestEntries<R> {
    /// Numbers the lines from `first` (a run of lines from the middle of a manifest).
    fn numbered_from(mut self, first: u64) -> Self {
        self.line = first.saturating_sub(1);
        self
    }
}

/// The longest manifest line accepted: a line holds one object (a 1,024-byte key is at most
/// 3 KiB encoded), so anything longer is not a manifest, and is not held in memory.
pub const MAX_LINE: usize = 1 << 20;

/// Parses a manifest that arrives in chunks (a streamed GET) without a blocking reader, so that
/// memory does not grow with the manifest: each chunk's whole records are parsed as it comes,
/// and only the start of the last, unfinished record is kept. A record ends at a newline outside
/// quotes; quotes pair up in any record the manifest writer quotes (`""` inside a field toggles
/// twice).
#[derive(Debug)]
pub struct ManifestChunks {
    location: String,
    /// The unfinished record's bytes so far.
    carry: Vec<u8>,
    in_quotes: bool,
    next_line: u64,
}

impl ManifestChunks {
    pub fn new(location: impl Into<String>) -> Self {
        ManifestChunks {
            location: location.into(),
            carry: Vec::new(),
            in_quotes: false,
            next_line: 1,
        }
    }

    /// Takes the next chunk; returns the entries of the records it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<ManifestEntry<'static>>> {
        let mut last_end = None;
        for (i, &byte) in chunk.iter().enumerate() {
            match byte {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => last_end = Some(i),
                _ => {}
            }
        }
        let Some(end) = last_end else {
            self.carry.extend_from_slice(chunk);
            if self.carry.len() > MAX_LINE {
                return Err(Error::bad_input(
                    format!("{} line {}", self.location, self.next_line),
                    format!("longer than {MAX_LINE} bytes: not a bundle manifest line"),
                ));
            }
            return Ok(Vec::new());
        };
        self.carry.extend_from_slice(&chunk[..=end]);
        let entries = self.parse_carry()?;
        self.carry.extend_from_slice(&chunk[end + 1..]);
        Ok(entries)
    }

    /// The manifest ended: returns the entries of a last record without a newline.
    pub fn finish(&mut self) -> Result<Vec<ManifestEntry<'static>>> {
        self.parse_carry()
    }

    fn parse_carry(&mut self) -> Result<Vec<ManifestEntry<'static>>> {
        let entries = manifest_entries(self.carry.as_slice(), &self.location)
            .numbered_from(self.next_line)
            .collect::<Result<Vec<_>>>()?;
        self.next_line += entries.len() as u64;
        self.carry.clear();
        Ok(entries)
    }
}

/// The key of bundle manifest `n` for the inventory manifest at `inventory_key`:
/// `PREFIX/<inventory key's folders joined by '-'>-<KEY>.<N>.index` (`.glacier.index` with -g).
pub fn bundle_manifest_key(
    prefix: &str,
    inventory_key: &str,
    key_name: &str,
    n: u64,
    glacier: bool,
) -> String {
    let stem = bundle_manifest_stem(inventory_key, key_name);
    let suffix = if glacier { ".glacier.index" } else { ".index" };
    join_prefix(prefix, &format!("{stem}.{n}{suffix}"))
}

/// `<inventory key's folders joined by '-'>-<KEY>`, shared by every manifest of one inventory.
pub fn bundle_manifest_stem(inventory_key: &str, key_name: &str) -> String {
    let folders: Vec<&str> = inventory_key.split('/').filter(|s| !s.is_empty()).collect();
    let folders = &folders[..folders.len().saturating_sub(1)];
    if folders.is_empty() {
        key_name.to_string()
    } else {
        format!("{}-{key_name}", folders.join("-"))
    }
}

/// `prefix/name`, tolerating an empty prefix and slashes at its ends.
pub fn join_prefix(prefix: &str, name: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_needed_exactly_where_a_special_byte_is() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            // Mostly plain bytes (high ones too), now and then one of the four special ones.
            let text: Vec<u8> = (0..len)
                .map(|i| {
                    let b = (state >> (i % 56)) as u8;
                    if b.is_multiple_of(61) {
                        b",\"\r\n"[usize::from(b % 4)]
                    } else {
                        b | 0x20
                    }
                })
                .collect();
            let naive = text.iter().copied().any(is_special);
            assert_eq!(needs_quoting(&text), naive, "{text:?}");
        }
        assert!(!needs_quoting(b"2024-05-06T22:37:48.000Z"));
        assert!(needs_quoting(b"0123456789abcdef\n"));
        assert!(needs_quoting(b"ab\"cdefgh"));
    }

    fn entry(key: &str, size: u64) -> ManifestEntry<'static> {
        ManifestEntry {
            bucket: Cow::Borrowed("src"),
            key: Cow::Owned(key.to_string()),
            size,
            version_id: Some(Cow::Borrowed("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")),
            etag: Some(Cow::Borrowed("d8e8fca2dc0f896fd7cb4cb0031ba249")),
            last_modified: Some(Cow::Borrowed("2024-05-06T22:44:22.000Z")),
            storage_class: Some(Cow::Borrowed("STANDARD")),
        }
    }

    #[test]
    fn names_follow_the_original_layout() {
        let key = "src/cfg/2026-11-22T01-00Z/manifest.json";
        assert_eq!(
            bundle_manifest_key("s3grouper-output", key, "manifest", 0, false),
            "s3grouper-output/src-cfg-2026-11-22T01-00Z-manifest.0.index"
        );
        assert_eq!(
            bundle_manifest_key("/p/", key, "m", 7, true),
            "p/src-cfg-2026-11-22T01-00Z-m.7.glacier.index"
        );
        assert_eq!(
            bundle_manifest_key("", "manifest.json", "manifest", 1, false),
            "manifest.1.index"
        );
    }

    #[test]
    fn odd_keys_round_trip_one_line_each() {
        let keys = [
            "plain.txt",
            "with space/and+plus/100%/a&b=c",
            "quote\"comma,semicolon;",
            "new\nline\ttab\r",
            "unicode/caf\u{e9}/\u{65e5}\u{672c}/\u{1F600}",
            &"k".repeat(1024),
        ];
        let mut writer = ManifestWriter::default();
        for (i, key) in keys.iter().enumerate() {
            writer.push(&entry(key, i as u64));
        }
        assert_eq!(writer.objects(), keys.len() as u64);
        let bytes = writer.finish();
        assert_eq!(
            bytes.iter().filter(|&&b| b == b'\n').count(),
            keys.len(),
            "one physical line per object"
        );
        let parsed = parse_manifest(&bytes, "m").unwrap_or_else(|e| panic!("{e}"));
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(parsed[i], entry(key, i as u64));
        }
    }

    #[test]
    fn fields_needing_quotes_are_quoted() {
        let odd = ManifestEntry {
            version_id: Some(Cow::Borrowed("v,\"1\"")),
            ..entry("k", 1)
        };
        let mut writer = ManifestWriter::default();
        writer.push(&odd);
        writer.push(&entry("plain", 2));
        let bytes = writer.finish();
        assert!(
            bytes.starts_with(b"src,k,1,\"v,\"\"1\"\"\","),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let parsed = parse_manifest(&bytes, "m").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, vec![odd, entry("plain", 2)]);
    }

    /// Found by `odd_manifest_entries_round_trip` with overflow checks on: sizes come from the
    /// inventory, and two huge ones overflowed the manifest's byte total.
    #[test]
    fn huge_sizes_do_not_overflow_the_total() {
        let mut writer = ManifestWriter::default();
        writer.push(&entry("a", u64::MAX));
        writer.push_line(b"src,b,1\n", 1);
        assert_eq!(writer.bytes(), u64::MAX);
        let bytes = writer.finish();
        let parsed = parse_manifest(&bytes, "m").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed[0].size, u64::MAX);
    }

    #[test]
    fn reads_the_original_three_column_format() {
        let parsed = parse_manifest(b"src,dir/a+file.txt,42\nsrc,b,0\n", "m")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].key, "dir/a file.txt");
        assert_eq!(parsed[0].size, 42);
        assert_eq!(parsed[0].version_id, None);
    }

    #[test]
    fn streamed_lines_are_numbered_across_chunks() {
        let mut chunks = ManifestChunks::new("s3://b/m.index");
        let first = chunks.feed(b"src,a,1\nsrc,b,2\nsrc,c").unwrap_or_default();
        assert_eq!(first.len(), 2);
        let err = chunks
            .feed(b",3\nsrc,d,x\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("s3://b/m.index line 4"), "{err}");
    }

    /// A manifest that never ends its line (a binary file given as `-m`) must not be held
    /// whole in memory while the end of its first line is sought.
    #[test]
    fn a_line_without_end_is_refused_once_past_the_limit() {
        let mut chunks = ManifestChunks::new("s3://b/m.index");
        let chunk = vec![b'x'; 64 << 10];
        let refused = (0..=MAX_LINE / chunk.len()).find_map(|_| chunks.feed(&chunk).err());
        let text = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("line 1") && text.contains("longer than"),
            "{text}"
        );
    }

    #[test]
    fn malformed_lines_are_named() {
        let err = |text: &str| {
            parse_manifest(text.as_bytes(), "s3://b/m.index")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("src,a,1\nsrc,b\n").contains("s3://b/m.index line 2"));
        assert!(err("src,a,big\n").contains("Size `big`"));
        assert!(err("src,,1\n").contains("Key is empty"));
        let long = format!("src,{},1\n", "k".repeat(1025));
        assert!(err(&long).contains("key is 1025 bytes, longer than the 1024 bytes S3 allows"));
        let long = format!("src,k,1,{},,,\n", "v".repeat(70_000));
        assert!(err(&long).contains("version ID is 70000 bytes"));
        let longest = format!("src,{},1\n", "k".repeat(1024));
        assert_eq!(err(&longest), "");
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{cases, garbage, mutated, odd_text};

    fn optional_text() -> impl Strategy<Value = Option<Cow<'static, str>>> {
        proptest::option::of(odd_text().prop_map(Cow::Owned))
    }

    fn entry() -> impl Strategy<Value = ManifestEntry<'static>> {
        (
            // Bucket names are DNS-like; odd text there could start with a byte order mark,
            // which the CSV reader drops at the start of a file.
            ("[a-z0-9][a-z0-9.-]{0,62}", odd_text(), any::<u64>()),
            (
                optional_text(),
                optional_text(),
                optional_text(),
                optional_text(),
            ),
        )
            .prop_map(
                |((bucket, key, size), (version_id, etag, last_modified, storage_class))| {
                    ManifestEntry {
                        bucket: Cow::Owned(bucket),
                        key: Cow::Owned(key),
                        size,
                        version_id,
                        etag,
                        last_modified,
                        storage_class,
                    }
                },
            )
    }

    fn manifest(entries: &[ManifestEntry<'_>]) -> Vec<u8> {
        let mut writer = ManifestWriter::default();
        for e in entries {
            writer.push(e);
        }
        writer.finish()
    }

    /// A valid manifest of 7-column lines, with 3-column lines of the original tools mixed in.
    fn valid_manifest() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec((entry(), any::<bool>()), 0..8).prop_map(|entries| {
            let mut bytes = Vec::new();
            for (e, three) in entries {
                if three {
                    let key = encode_key(&e.key);
                    bytes.extend_from_slice(format!("b,{key},{}\n", e.size).as_bytes());
                } else {
                    write_line(&mut bytes, &e);
                }
            }
            bytes
        })
    }

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn odd_manifest_entries_round_trip(entries in proptest::collection::vec(entry(), 1..8)) {
            let bytes = manifest(&entries);
            let parsed = parse_manifest(&bytes, "m");
            prop_assert_eq!(parsed.ok(), Some(entries));
        }

        #[test]
        fn three_column_lines_round_trip(keys in proptest::collection::vec((odd_text(), any::<u64>()), 1..8)) {
            let mut bytes = Vec::new();
            for (key, size) in &keys {
                bytes.extend_from_slice(format!("src,{},{size}\n", encode_key(key)).as_bytes());
            }
            let parsed = parse_manifest(&bytes, "m").map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got: Vec<(String, u64)> = parsed.into_iter().map(|e| (e.key.into_owned(), e.size)).collect();
            prop_assert_eq!(got, keys);
        }

        /// Streaming a manifest in chunks cut anywhere (inside a quoted field, a `""`, a
        /// multi-byte character) reads the same entries as parsing it whole.
        #[test]
        fn chunked_manifests_read_like_whole_ones(
            bytes in valid_manifest(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let whole = parse_manifest(&bytes, "m").map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut chunks = ManifestChunks::new("m");
            let mut streamed = Vec::new();
            let mut from = 0;
            for to in cuts {
                streamed.extend(chunks.feed(&bytes[from..to]).map_err(|e| TestCaseError::fail(e.to_string()))?);
                from = to;
            }
            streamed.extend(chunks.finish().map_err(|e| TestCaseError::fail(e.to_string()))?);
            prop_assert_eq!(streamed, whole);
        }

        #[test]
        fn garbage_streamed_in_chunks_never_panics(bytes in garbage(), cut in any::<prop::sample::Index>()) {
            let mut chunks = ManifestChunks::new("m");
            let (a, b) = bytes.split_at(cut.index(bytes.len() + 1));
            let _ = chunks.feed(a).and_then(|_| chunks.feed(b)).and_then(|_| chunks.finish());
        }

        #[test]
        fn garbage_manifests_never_panic(bytes in garbage()) {
            let _ = parse_manifest(&bytes, "m");
        }

        #[test]
        fn mutated_manifests_never_panic(bytes in mutated(valid_manifest())) {
            if let Err(e) = parse_manifest(&bytes, "s3://b/m.index") {
                prop_assert!(e.to_string().contains("s3://b/m.index line "), "{}", e);
            }
        }
    }
}
