//! Checking an index against the bytes of its archive without holding the archive. The rows are
//! planned into windows, byte ranges of the uncompressed tar stream that one range GET (or one
//! pass over a decompressed stream) reads, and a [`Scanner`] fed a window's bytes in order checks
//! each member's header (name, size, where its data starts) and, when deep, the MD5 of its data.
//! Pure: the caller does the reading.

use md5::{Digest, Md5};

use super::pax::{padding, parse_member_header, BLOCK, END_OF_ARCHIVE};
use super::records::IndexRow;

/// Header blocks longer than this are not this tool's (pax records with metadata and tags of a
/// few KiB at most): such an index row is refused rather than read.
pub const MAX_HEADER: u64 = 1 << 20;

/// Where a row's member lies: its header from `header`, its data from `data` to `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub header: u64,
    pub data: u64,
    /// End of the data, before padding.
    pub end: u64,
}

impl Span {
    /// End of the member including its padding to a whole block.
    pub fn padded_end(&self) -> u64 {
        self.end + padding(self.end - self.data)
    }
}

/// The row's member span, or what is wrong with its offsets.
pub fn span(row: &IndexRow) -> Result<Span, String> {
    let (Some(header), Some(data)) = (row.header_offset, row.data_offset) else {
        return Err("the index row has no offsets".into());
    };
    if header % 512 != 0 || data % 512 != 0 {
        return Err(format!(
            "offsets {header} and {data} are not on 512-byte blocks"
        ));
    }
    if data <= header || data - header > MAX_HEADER {
        return Err(format!(
            "data_offset {data} does not follow header_offset {header} by one to {} header bytes",
            MAX_HEADER
        ));
    }
    // Room for the padding and the end of archive too, so that no sum over spans overflows.
    let end = data
        .checked_add(row.size)
        .filter(|end| {
            end.checked_add(BLOCK + END_OF_ARCHIVE.len() as u64)
                .is_some()
        })
        .ok_or_else(|| format!("size {} overflows", row.size))?;
    let expected_member = format!("{}/{}", row.bucket, row.key);
    if row.member != expected_member {
        return Err(format!(
            "member `{}` is not `{expected_member}`",
            row.member
        ));
    }
    Ok(Span { header, data, end })
}

/// A byte range to read and the rows (indices into the index) whose members it covers, in
/// offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub rows: Vec<usize>,
}

/// How the rows' members are laid out in the archive: problems of single rows, and what the
/// whole archive's length must be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Rows with valid, non-overlapping spans, by header offset.
    pub ordered: Vec<(usize, Span)>,
    /// (row, problem) for rows that cannot be checked against the archive.
    pub problems: Vec<(usize, String)>,
    /// Length of the uncompressed tar stream the rows imply: the end of the last member and the
    /// two zero blocks.
    pub expected_length: u64,
}

/// Sorts the rows by header offset and finds bad or overlapping offsets. The rows follow
/// members ending at `previous_end` (0 for a whole index; the end of the chunk before, for an
/// index read in chunks in archive order): a row that starts before it overlaps them.
pub fn layout(rows: &[IndexRow], previous_end: u64) -> Layout {
    let mut out = Layout::default();
    let mut spans = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        match span(row) {
            Ok(span) => spans.push((i, span)),
            Err(problem) => out.problems.push((i, problem)),
        }
    }
    spans.sort_by_key(|(_, span)| span.header);
    let mut previous_end = previous_end;
    for (i, span) in spans {
        if span.header < previous_end {
            out.problems.push((
                i,
                format!(
                    "header_offset {} overlaps the member before it, which ends at {previous_end}",
                    span.header
                ),
            ));
            continue;
        }
        previous_end = span.padded_end();
        out.ordered.push((i, span));
    }
    out.expected_length = if out.ordered.is_empty() && out.problems.is_empty() {
        0
    } else {
        previous_end + END_OF_ARCHIVE.len() as u64
    };
    out
}

/// Groups members into windows of at most `max_window` bytes (a member larger than that gets
/// a window of its own), reading through gaps of at most `max_gap` bytes rather than starting
/// another request. Without `deep` a window needs only the members' headers.
pub fn plan_windows(
    ordered: &[(usize, Span)],
    deep: bool,
    max_window: u64,
    max_gap: u64,
) -> Vec<Window> {
    let mut windows: Vec<Window> = Vec::new();
    for &(row, span) in ordered {
        let needed_end = if deep { span.end } else { span.data };
        match windows.last_mut() {
            Some(window)
                if span.header.saturating_sub(window.end) <= max_gap
                    && needed_end - window.start <= max_window =>
            {
                window.end = needed_end;
                window.rows.push(row);
            }
            _ => windows.push(Window {
                start: span.header,
                end: needed_end,
                rows: vec![row],
            }),
        }
    }
    windows
}

/// Where the scanner is within the current member.
enum Stage {
    Header(Vec<u8>),
    Data(Md5),
}

/// Checks the members of one window from its bytes, fed in order from `window.start`.
pub struct Scanner<'a> {
    rows: &'a [IndexRow],
    spans: Vec<(usize, Span)>,
    deep: bool,
    position: u64,
    next: usize,
    stage: Stage,
    results: Vec<(usize, Result<(), String>)>,
}

impl<'a> Scanner<'a> {
    /// `members` are (row, span) in offset order, as [`layout`] gives them.
    pub fn new(rows: &'a [IndexRow], members: Vec<(usize, Span)>, start: u64, deep: bool) -> Self {
        Scanner {
            rows,
            spans: members,
            deep,
            position: start,
            next: 0,
            stage: Stage::Header(Vec::new()),
            results: Vec::new(),
        }
    }

    /// The offset in the stream of the next byte it takes.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes still wanted: the scanner has checked every member once this is false.
    pub fn wants_more(&self) -> bool {
        self.next < self.spans.len()
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.wants_more() {
            let (row, span) = self.spans[self.next];
            let take = if self.position < span.header {
                // A gap (another member's data, or padding): skip it.
                (span.header - self.position).min(chunk.len() as u64)
            } else if self.position < span.data {
                let take = (span.data - self.position).min(chunk.len() as u64);
                if let Stage::Header(buffer) = &mut self.stage {
                    buffer.extend_from_slice(&chunk[..take as usize]);
                }
                take
            } else {
                let take = (span.end - self.position).min(chunk.len() as u64);
                if let Stage::Data(md5) = &mut self.stage {
                    md5.update(&chunk[..take as usize]);
                }
                take
            };
            if take == 0 {
                // Cannot happen with spans from `layout`; never loop on it.
                self.done(row, Err("the scanner lost its place".into()));
                continue;
            }
            self.position += take;
            chunk = &chunk[take as usize..];
            self.settle(row, span);
        }
    }

    /// Moves on when the current member's header or data is complete.
    fn settle(&mut self, row: usize, span: Span) {
        if self.position == span.data {
            if let Stage::Header(buffer) = &self.stage {
                let verdict = check_header(&self.rows[row], span, buffer);
                if verdict.is_err() || !self.deep {
                    self.done(row, verdict);
                    return;
                }
                self.stage = Stage::Data(Md5::new());
            }
        }
        if self.deep && self.position == span.end {
            if let Stage::Data(md5) = std::mem::replace(&mut self.stage, Stage::Header(Vec::new()))
            {
                let computed = hex::encode(md5.finalize());
                let expected = &self.rows[row].md5;
                let verdict = if computed.eq_ignore_ascii_case(expected) {
                    Ok(())
                } else {
                    Err(format!(
                        "the member's bytes have MD5 {computed}, the index says `{expected}`"
                    ))
                };
                self.done(row, verdict);
            }
        }
    }

    fn done(&mut self, row: usize, verdict: Result<(), String>) {
        self.results.push((row, verdict));
        self.stage = Stage::Header(Vec::new());
        self.next += 1;
    }

    /// The verdict of every member: those the bytes did not reach are reported as cut short.
    pub fn finish(mut self, why_short: &str) -> Vec<(usize, Result<(), String>)> {
        for &(row, span) in &self.spans[self.next..] {
            let what = if self.position < span.data {
                format!("its header at {}", span.header)
            } else {
                format!("its data at {}", span.data)
            };
            self.results
                .push((row, Err(format!("{why_short} before {what}"))));
        }
        self.results
    }
}

fn check_header(row: &IndexRow, span: Span, bytes: &[u8]) -> Result<(), String> {
    let header = parse_member_header(bytes)
        .map_err(|e| format!("no member header at header_offset {}: {e}", span.header))?;
    if header.length != span.data - span.header {
        return Err(format!(
            "the header at {} ends at {}, but data_offset is {}",
            span.header,
            span.header + header.length,
            span.data
        ));
    }
    if header.name != row.member {
        return Err(format!(
            "the header at {} names `{}`, not `{}`",
            span.header, header.name, row.member
        ));
    }
    if header.size != row.size {
        return Err(format!(
            "the header at {} gives {} bytes, the index {}",
            span.header, header.size, row.size
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::pax::member_header;

    /// An archive of members (key, data) and its index rows.
    fn archive(members: &[(&str, &[u8])]) -> (Vec<u8>, Vec<IndexRow>) {
        let mut bytes = Vec::new();
        let mut rows = Vec::new();
        for (key, data) in members {
            let member = format!("src/{key}");
            let header_offset = bytes.len() as u64;
            bytes.extend(member_header(&member, data.len() as u64, 0, &[]));
            let data_offset = bytes.len() as u64;
            bytes.extend_from_slice(data);
            bytes.resize(bytes.len() + padding(data.len() as u64) as usize, 0);
            rows.push(IndexRow {
                bucket: "src".into(),
                key: key.to_string(),
                size: data.len() as u64,
                md5: hex::encode(Md5::digest(data)),
                member,
                header_offset: Some(header_offset),
                data_offset: Some(data_offset),
                ..IndexRow::default()
            });
        }
        bytes.extend_from_slice(&END_OF_ARCHIVE);
        (bytes, rows)
    }

    /// Scans every window of `bytes`, fed in chunks of `chunk` bytes.
    fn scan(bytes: &[u8], rows: &[IndexRow], deep: bool, chunk: usize) -> Vec<Result<(), String>> {
        let layout = layout(rows, 0);
        let mut verdicts: Vec<Result<(), String>> = vec![Ok(()); rows.len()];
        for (row, problem) in &layout.problems {
            verdicts[*row] = Err(problem.clone());
        }
        for window in plan_windows(&layout.ordered, deep, 4096, 600) {
            let members = layout
                .ordered
                .iter()
                .filter(|(r, _)| window.rows.contains(r))
                .copied()
                .collect();
            let mut scanner = Scanner::new(rows, members, window.start, deep);
            let end = (window.end as usize).min(bytes.len());
            let start = (window.start as usize).min(end);
            for piece in bytes[start..end].chunks(chunk) {
                scanner.feed(piece);
            }
            for (row, verdict) in scanner.finish("the archive ended") {
                verdicts[row] = verdict;
            }
        }
        verdicts
    }

    fn all_ok(verdicts: &[Result<(), String>]) -> bool {
        verdicts.iter().all(Result::is_ok)
    }

    #[test]
    fn a_sound_archive_checks_out_in_any_chunking() {
        let big = vec![9u8; 5000];
        let (bytes, rows) = archive(&[("a", b"hello"), ("", b""), ("big", &big), ("z", b"x")]);
        assert_eq!(layout(&rows, 0).expected_length, bytes.len() as u64);
        for chunk in [1, 7, 512, 100_000] {
            for deep in [false, true] {
                let verdicts = scan(&bytes, &rows, deep, chunk);
                assert!(all_ok(&verdicts), "chunk {chunk} deep {deep}: {verdicts:?}");
            }
        }
    }

    #[test]
    fn windows_group_small_members_and_skip_big_data_unless_deep() {
        let big = vec![1u8; 10_000];
        let (_, rows) = archive(&[("a", b"1"), ("b", b"2"), ("big", &big), ("c", b"3")]);
        let layout = layout(&rows, 0);
        let shallow = plan_windows(&layout.ordered, false, 4096, 600);
        // a, b and big's header together; c after 10,000 bytes of data in its own window.
        assert_eq!(
            shallow.iter().map(|w| w.rows.clone()).collect::<Vec<_>>(),
            vec![vec![0, 1, 2], vec![3]]
        );
        let deep = plan_windows(&layout.ordered, true, 4096, 600);
        assert!(deep
            .iter()
            .any(|w| w.rows == vec![2] && w.end - w.start > 10_000));
    }

    #[test]
    fn wrong_offsets_names_and_sizes_are_found() {
        let (bytes, rows) = archive(&[("a", b"hello"), ("b", b"world"), ("c", b"!")]);
        let mut bad = rows.clone();
        bad[0].data_offset = Some(bad[0].data_offset.unwrap_or(0) + 512);
        bad[1].member = "src/other".into();
        bad[2].size = 2;
        let verdicts = scan(&bytes, &bad, false, 64);
        assert!(verdicts.iter().all(Result::is_err), "{verdicts:?}");
        let mut shifted = rows.clone();
        shifted[1].header_offset = Some(shifted[1].header_offset.unwrap_or(0) + 512);
        shifted[1].data_offset = Some(shifted[1].data_offset.unwrap_or(0) + 512);
        let verdicts = scan(&bytes, &shifted, false, 64);
        assert!(verdicts[1].is_err() && verdicts[0].is_ok(), "{verdicts:?}");
        let mut wrong_size = rows;
        wrong_size[0].size = 6;
        wrong_size[0].member = "src/a".into();
        let verdicts = scan(&bytes, &wrong_size, false, 64);
        assert!(
            verdicts[0]
                .as_ref()
                .is_err_and(|e| e.contains("gives 5 bytes")),
            "{verdicts:?}"
        );
    }

    #[test]
    fn overlaps_and_missing_offsets_are_problems() {
        let (_, rows) = archive(&[("a", b"hello"), ("b", b"world")]);
        let mut overlapping = rows.clone();
        overlapping[1].header_offset = Some(512);
        overlapping[1].data_offset = Some(1024);
        let found = layout(&overlapping, 0);
        assert_eq!(found.problems.len(), 1, "{found:?}");
        let mut none = rows;
        none[0].data_offset = None;
        none[1].header_offset = Some(3);
        assert_eq!(layout(&none, 0).problems.len(), 2);
        assert_eq!(layout(&[], 0).expected_length, 0);
    }

    /// Found reviewing the scanner for the property tests: an index size that fits after
    /// data_offset but not with the member's padding overflowed `padded_end` (a panic with
    /// overflow checks, a wrapped, nonsense layout without).
    #[test]
    fn sizes_that_overflow_with_padding_are_problems() {
        let (_, rows) = archive(&[("a", b"hello")]);
        let mut huge = rows;
        huge[0].size = u64::MAX - 1024 - 1;
        let found = layout(&huge, 0);
        assert!(found.ordered.is_empty(), "{found:?}");
        assert!(found.problems[0].1.contains("overflows"), "{found:?}");
    }

    #[test]
    fn changed_bytes_are_found_only_deep() {
        let (mut bytes, rows) = archive(&[("a", b"hello"), ("b", b"world")]);
        let data = rows[1].data_offset.unwrap_or(0) as usize;
        bytes[data] = b'W';
        assert!(all_ok(&scan(&bytes, &rows, false, 100)));
        let verdicts = scan(&bytes, &rows, true, 100);
        assert!(verdicts[0].is_ok() && verdicts[1].is_err(), "{verdicts:?}");
    }

    #[test]
    fn a_truncated_archive_reports_the_members_it_cut() {
        let (bytes, rows) = archive(&[("a", b"hello"), ("b", b"world")]);
        let cut = rows[1].header_offset.unwrap_or(0) as usize + 100;
        let verdicts = scan(&bytes[..cut], &rows, false, 512);
        assert!(verdicts[0].is_ok(), "{verdicts:?}");
        assert!(
            verdicts[1]
                .as_ref()
                .is_err_and(|e| e.contains("ended before")),
            "{verdicts:?}"
        );
    }

    mod proptests {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;
        use crate::fuzzing::{cases, mutations, odd_text, Mutations};

        /// An archive of 1 to 4 members with odd keys, and its index rows.
        fn valid_archive() -> impl Strategy<Value = (Vec<u8>, Vec<IndexRow>)> {
            vec((odd_text(), vec(any::<u8>(), 0..1200)), 1..4).prop_map(|members| {
                let members: Vec<(&str, &[u8])> = members
                    .iter()
                    .map(|(k, d)| (k.as_str(), d.as_slice()))
                    .collect();
                archive(&members)
            })
        }

        /// A change to one row's offsets or size, as a damaged index would have.
        fn damaged_row() -> impl Strategy<Value = (usize, u8, u64)> {
            let value = prop_oneof![0u64..8192, (0u64..16).prop_map(|b| b * 512), any::<u64>()];
            (any::<usize>(), 0u8..3, value)
        }

        proptest! {
            #![proptest_config(cases(2048))]

            #[test]
            fn sound_archives_with_odd_names_check_out((bytes, rows) in valid_archive(), chunk in 1usize..2000) {
                for deep in [false, true] {
                    let verdicts = scan(&bytes, &rows, deep, chunk);
                    prop_assert!(all_ok(&verdicts), "{:?}", verdicts);
                }
            }

            #[test]
            fn mutated_archives_never_panic_the_scanner(
                (valid, rows) in valid_archive(),
                mutations in proptest::option::of(mutations()),
                damage in vec(damaged_row(), 0..3),
                chunk in 1usize..2000,
            ) {
                let mut bytes = valid;
                mutations.iter().for_each(|m: &Mutations| m.apply(&mut bytes));
                let mut rows = rows;
                for (row, field, value) in damage {
                    let count = rows.len();
                    let row = &mut rows[row % count];
                    match field {
                        0 => row.header_offset = Some(value),
                        1 => row.data_offset = Some(value),
                        _ => row.size = value,
                    }
                }
                for deep in [false, true] {
                    let _ = scan(&bytes, &rows, deep, chunk);
                }
            }
        }
    }
}
