//! Memory flat in the input's size (issue 15): the peak RSS of `group`, `plan`, `verify` and
//! `extract` over 300,000 rows (inventory rows; manifest and index rows of one bundle) may
//! exceed their peak over 100,000 rows by at most [`GROWTH_LIMIT_MIB`]. A per-row cost of 126
//! bytes or more (a row kept in a Vec or a map) fails; bounded buffers filling up with the input
//! do not. `s3bundler-bench memory` prints the same figures at 100,000 and 1,000,000.

use s3bundler_testkit::generate::DataFormat;
use s3bundler_testkit::memory::{peak_pairs, Measured};

const SMALL: u64 = 100_000;
const LARGE: u64 = 300_000;
/// 24 MiB over 200,000 more rows: 126 bytes a row. `group` and `plan` fill bounded buffers
/// (data files and line batches in flight) that are not yet full at 100,000 rows: they grew
/// 8-17 MiB here between runs, and +24 MiB from 100,000 to 1,000,000 rows, not the 3.5 times
/// as much a cost per row would give.
const GROWTH_LIMIT_MIB: f64 = 24.0;

#[tokio::test(flavor = "multi_thread")]
async fn group_plan_verify_and_extract_memory_does_not_grow_with_the_row_count() {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_s3bundler"));
    // `bundle` has a test of its own (tests/bundle.rs, `memory_does_not_grow_with_the_manifest`).
    let commands = [
        Measured::Group,
        Measured::Plan,
        Measured::Verify,
        Measured::Extract,
    ];
    let pairs = peak_pairs(binary, &commands, SMALL, LARGE, DataFormat::Csv).await;
    let grown: Vec<String> = pairs
        .iter()
        .filter(|pair| pair.growth_mib() > GROWTH_LIMIT_MIB)
        .map(|pair| {
            format!(
                "{}: {:.1} MiB at {SMALL} rows, {:.1} MiB at {LARGE}",
                pair.command.name(),
                pair.small_mib,
                pair.large_mib
            )
        })
        .collect();
    assert!(
        grown.is_empty(),
        "peak RSS grew by more than {GROWTH_LIMIT_MIB} MiB: {grown:?}"
    );
}
