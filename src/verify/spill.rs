//! Where `verify` keeps a manifest's objects while it matches them with the rows that place
//! them. Matching needs every row of one (bucket, key) together, and the manifest (inventory
//! order), the index (archive order) and the DLQ (failure order) list them in different orders;
//! holding them all would grow with the manifest. So each is spilled, as it streams in, to one
//! of a few anonymous temporary files chosen by a hash of (bucket, key), and the files are then
//! matched one at a time: memory holds one partition, about [`PARTITION_OBJECTS`] objects
//! whatever the manifest's length (up to [`MOST_PARTITIONS`] partitions).

use std::hash::{Hash, Hasher};
use std::io::{BufReader, BufWriter, Seek};

use crate::archive::records::{dlq_fields, dlq_row, index_fields, index_row, DlqRow, IndexRow};
use crate::error::{Error, Result};
use crate::manifest::{manifest_entries, write_line, ManifestEntry};

/// Objects a partition holds, aimed at.
pub const PARTITION_OBJECTS: u64 = 4096;
/// At most this many partitions (open files).
pub const MOST_PARTITIONS: u64 = 256;
/// Manifest bytes per object, low, to estimate the objects from the manifest's length.
const LINE_BYTES: u64 = 32;

/// One partition read back: its objects and rows, each with its number in its own table
/// (0 for the first row), in the order they were spilled.
#[derive(Debug, Default)]
pub struct Partition {
    pub entries: Vec<(usize, ManifestEntry<'static>)>,
    /// Index rows with what is wrong with their member.
    pub index: Vec<(usize, IndexRow, Option<String>)>,
    pub dlq: Vec<(usize, DlqRow)>,
}

/// The spill files of one manifest.
pub struct Partitions {
    files: Vec<csv::Writer<BufWriter<std::fs::File>>>,
}

fn spill_error(source: impl Into<std::io::Error>) -> Error {
    Error::Io {
        location: "a temporary file of verify".into(),
        source: source.into(),
    }
}

impl Partitions {
    /// Partitions for a manifest of `manifest_bytes`.
    pub fn for_manifest(manifest_bytes: u64) -> Result<Self> {
        let count = (manifest_bytes / LINE_BYTES / PARTITION_OBJECTS).clamp(1, MOST_PARTITIONS);
        let files = (0..count)
            .map(|_| {
                let file = tempfile::tempfile().map_err(spill_error)?;
                Ok(csv::WriterBuilder::new()
                    .flexible(true)
                    .has_headers(false)
                    .from_writer(BufWriter::with_capacity(16 << 10, file)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Partitions { files })
    }

    fn file(&mut self, bucket: &str, key: &str) -> &mut csv::Writer<BufWriter<std::fs::File>> {
        let mut hasher = std::hash::DefaultHasher::new();
        (bucket, key).hash(&mut hasher);
        let n = (hasher.finish() % self.files.len() as u64) as usize;
        &mut self.files[n]
    }

    fn write<I, T>(&mut self, bucket: &str, key: &str, fields: I) -> Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.file(bucket, key)
            .write_record(fields)
            .map_err(spill_error)
    }

    pub fn entry(&mut self, number: usize, entry: &ManifestEntry<'_>) -> Result<()> {
        let mut line = Vec::new();
        write_line(&mut line, entry);
        let number = number.to_string();
        self.write(&entry.bucket, &entry.key, [b"M", number.as_bytes(), &line])
    }

    pub fn index(&mut self, number: usize, row: &IndexRow, problem: Option<&str>) -> Result<()> {
        let head = [
            "I".to_string(),
            number.to_string(),
            problem.map_or("", |_| "!").to_string(),
            problem.unwrap_or("").to_string(),
        ];
        let fields = head.into_iter().chain(index_fields(row));
        self.write(&row.bucket, &row.key, fields)
    }

    pub fn dlq(&mut self, number: usize, row: &DlqRow) -> Result<()> {
        let head = ["D".to_string(), number.to_string()];
        self.write(
            &row.bucket,
            &row.key,
            head.into_iter().chain(dlq_fields(row)),
        )
    }

    /// The partitions, read back one at a time.
    pub fn read_back(self) -> Result<impl Iterator<Item = Result<Partition>>> {
        let files = self
            .files
            .into_iter()
            .map(|writer| {
                let mut file = writer
                    .into_inner()
                    .map_err(|e| spill_error(e.into_error()))?
                    .into_inner()
                    .map_err(|e| spill_error(e.into_error()))?;
                file.rewind().map_err(spill_error)?;
                Ok(file)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(files.into_iter().map(read_partition))
    }
}

fn read_partition(file: std::fs::File) -> Result<Partition> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(BufReader::new(file));
    let mut partition = Partition::default();
    let location = "a temporary file of verify";
    let bad = |detail: String| Error::bad_input(location, detail);
    for record in reader.records() {
        let record = record.map_err(|e| bad(format!("cannot read back: {e}")))?;
        let number: usize = record
            .get(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad("a spilled row without its number".into()))?;
        let rest =
            |from: usize| csv::StringRecord::from(record.iter().skip(from).collect::<Vec<_>>());
        match record.get(0) {
            Some("M") => {
                let line = record.get(2).unwrap_or("");
                let entry = manifest_entries(line.as_bytes(), location)
                    .next()
                    .unwrap_or_else(|| Err(bad("a spilled entry without its line".into())))?;
                partition.entries.push((number, entry));
            }
            Some("I") => {
                let problem =
                    (record.get(2) == Some("!")).then(|| record.get(3).unwrap_or("").to_string());
                partition
                    .index
                    .push((number, index_row(&rest(4), &bad)?, problem));
            }
            _ => partition.dlq.push((number, dlq_row(&rest(2), &bad)?)),
        }
    }
    Ok(partition)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::archive::records::DlqReason;

    #[test]
    fn every_row_of_one_object_comes_back_in_the_same_partition() {
        let mut partitions = Partitions::for_manifest(100 << 20).unwrap_or_else(|e| panic!("{e}"));
        assert!(partitions.files.len() > 1);
        for i in 0..2000usize {
            let key = format!("k,\"{i}\"\nx");
            let entry = ManifestEntry {
                bucket: Cow::Borrowed("src"),
                key: Cow::Borrowed(&key),
                size: i as u64,
                version_id: None,
                etag: None,
                last_modified: None,
                storage_class: None,
            };
            let row = IndexRow {
                bucket: "src".into(),
                key: key.clone(),
                size: i as u64,
                ..IndexRow::default()
            };
            let dlq = DlqRow {
                bucket: "src".into(),
                key: key.clone(),
                version_id: None,
                size: 1,
                last_modified: None,
                reason: DlqReason::Retry,
                detail: String::new(),
            };
            partitions
                .entry(i, &entry)
                .unwrap_or_else(|e| panic!("{e}"));
            let problem = (i % 2 == 0).then_some("bad, \"really\"");
            partitions
                .index(i + 7, &row, problem)
                .unwrap_or_else(|e| panic!("{e}"));
            partitions
                .dlq(i + 9, &dlq)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut seen = 0;
        for partition in partitions.read_back().unwrap_or_else(|e| panic!("{e}")) {
            let partition = partition.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(partition.entries.len(), partition.index.len());
            assert_eq!(partition.entries.len(), partition.dlq.len());
            for (((n, entry), (m, row, problem)), (d, dlq)) in partition
                .entries
                .iter()
                .zip(&partition.index)
                .zip(&partition.dlq)
            {
                assert_eq!((*m, *d), (n + 7, n + 9));
                assert_eq!(
                    (entry.key.as_ref(), entry.size),
                    (row.key.as_str(), *n as u64)
                );
                assert_eq!(dlq.key, row.key);
                assert_eq!(problem.is_some(), n % 2 == 0);
            }
            seen += partition.entries.len();
        }
        assert_eq!(seen, 2000);
    }
}
