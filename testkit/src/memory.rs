//! Peak RSS of `s3bundler` commands at two input sizes. Issue 15 holds them to memory flat in
//! the size of their input (the inventory, the manifest, the index): `s3bundler-bench memory`
//! prints the figures, and s3bundler's tests/memory.rs fails when they grow with the count.
//!
//! [`Inputs`] generates one size's inputs in a local s3s server: an inventory report (CSV.gz,
//! ORC or Parquet) for `group` and `plan`, a bundle (manifest, index, `.tar` and the same
//! members as `.tar.gz`) of tiny members for `verify` and `extract`, written straight into
//! the server's files with the index format of the README, and the source objects of that
//! manifest for `bundle`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use md5::{Digest, Md5};

use crate::generate::{report, upload_report, DataFormat, InventorySpec};
use crate::measure::{measure, ChildUsage};
use crate::server::LocalS3;

/// A command whose memory is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    Group,
    Plan,
    Verify,
    Extract,
    /// One manifest of every object, at default settings.
    Bundle,
}

impl Measured {
    pub const ALL: [Measured; 5] = [
        Measured::Group,
        Measured::Plan,
        Measured::Verify,
        Measured::Extract,
        Measured::Bundle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Measured::Group => "group",
            Measured::Plan => "plan",
            Measured::Verify => "verify",
            Measured::Extract => "extract",
            Measured::Bundle => "bundle",
        }
    }

    /// What the input's rows are, for printing.
    pub fn input(self) -> &'static str {
        match self {
            Measured::Group | Measured::Plan => "inventory rows",
            Measured::Verify | Measured::Extract => "manifest and index rows",
            Measured::Bundle => "manifest rows (objects)",
        }
    }
}

/// Manifests of this many objects, so that the smallest inputs measured fill several and
/// their buffers weigh the same at both sizes.
pub const COUNT_THRESHOLD: u64 = 10_000;
/// Inventory data files at every size: the readers in flight are the same, only the files
/// grow.
const DATA_FILES: usize = 4;

const INVENTORY: &str = "mem-inventory";
const SOURCE: &str = "mem-source";
const MANIFESTS: &str = "mem-manifests";
const MANIFEST_KEY: &str = "m/mem.0.index";
const ARCHIVES: &str = "mem-archives";

/// One size's inputs, in a server of their own under a temporary folder.
pub struct Inputs {
    scratch: tempfile::TempDir,
    server: LocalS3,
    rows: u64,
    /// Objects `group` selects from the inventory.
    selected: u64,
    inventory_uri: String,
    /// The bundle's `.tar`, when generated.
    archive_key: Option<String>,
}

impl Inputs {
    /// Generates `rows` inventory rows in `format`, and a bundle of `rows` members when one of
    /// `commands` reads it.
    pub async fn generate(rows: u64, format: DataFormat, commands: &[Measured]) -> Inputs {
        let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let server =
            LocalS3::start(&scratch.path().join("s3"), 0).unwrap_or_else(|e| panic!("{e}"));
        let client = crate::s3_client(&server.endpoint);
        for bucket in [INVENTORY, MANIFESTS, ARCHIVES] {
            let _ = client.create_bucket().bucket(bucket).send().await;
        }
        let spec = InventorySpec {
            data_files: DATA_FILES,
            ..InventorySpec::new(SOURCE, rows)
        };
        let uploaded = upload_report(
            &client,
            INVENTORY,
            "inventory/",
            &spec,
            report(&spec, format, false),
        )
        .await;
        let reads_bundle = commands
            .iter()
            .any(|c| matches!(c, Measured::Verify | Measured::Extract | Measured::Bundle));
        let with_sources = commands.contains(&Measured::Bundle);
        if with_sources {
            let _ = client.create_bucket().bucket(SOURCE).send().await;
        }
        let archive_key = reads_bundle.then(|| {
            write_bundle(&server, rows, with_sources)
                .unwrap_or_else(|e| panic!("writing the bundle: {e}"))
        });
        Inputs {
            scratch,
            server,
            rows,
            selected: uploaded.expected.selected,
            inventory_uri: uploaded.manifest_uri,
            archive_key,
        }
    }

    /// Runs `command` of `binary` over these inputs and measures it; panics unless it
    /// succeeded and read every row.
    pub fn run(&self, binary: &Path, command: Measured) -> ChildUsage {
        let threshold = COUNT_THRESHOLD.to_string();
        let inventory = ["-m", &self.inventory_uri, "-c", &threshold];
        let manifests = format!("s3://{MANIFESTS}/m/");
        let restored = self.scratch.path().join("restored");
        let bundled_manifest = format!("s3://{MANIFESTS}/{MANIFEST_KEY}");
        let args: Vec<&str> = match command {
            Measured::Group => [&["group", "-b", MANIFESTS, "--json"][..], &inventory].concat(),
            Measured::Plan => [&["plan", "--json"][..], &inventory].concat(),
            Measured::Verify => {
                vec![
                    "verify",
                    "--manifests",
                    &manifests,
                    "-b",
                    ARCHIVES,
                    "--json",
                ]
            }
            Measured::Extract => vec!["extract", "-C", path_str(&restored)],
            Measured::Bundle => vec![
                "bundle",
                "-m",
                &bundled_manifest,
                "-b",
                ARCHIVES,
                "-p",
                "bundled",
                "--json",
            ],
        };
        let mut child = Command::new(binary);
        child
            .args(&args)
            .envs(crate::cli_env(&self.server.endpoint))
            .env("S3BUNDLER_SIGN_PAYLOAD", "never")
            .env("RUST_LOG", "warn");
        if command == Measured::Extract {
            // The streamed path: one pass over the compressed archive, every member restored.
            let _ = std::fs::remove_dir_all(&restored);
            let archive = self.archive_key.as_deref().unwrap_or_default();
            child.arg(format!("s3://{ARCHIVES}/{archive}.gz"));
        }
        let usage = measure(&mut child);
        assert!(
            usage.status.success(),
            "s3bundler {} failed ({}): {}",
            command.name(),
            usage.status,
            tail(&usage.stdout)
        );
        let json = || serde_json::from_str::<serde_json::Value>(&usage.stdout).unwrap_or_default();
        let (what, found, expected) = match command {
            Measured::Group => ("rows seen", json()["rows_seen"].as_u64(), self.rows),
            Measured::Plan => ("objects", json()["objects"].as_u64(), self.selected),
            Measured::Verify => (
                "objects verified",
                json()["totals"]["verified"].as_u64(),
                self.rows,
            ),
            // The last line: `restored N objects (…)`.
            Measured::Extract => (
                "objects restored",
                usage
                    .stdout
                    .lines()
                    .last()
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok()),
                self.rows,
            ),
            Measured::Bundle => (
                "objects archived",
                json()["objects_archived"].as_u64(),
                self.rows,
            ),
        };
        assert_eq!(
            found,
            Some(expected),
            "s3bundler {}: {what}; output: {}",
            command.name(),
            tail(&usage.stdout)
        );
        usage
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
}

/// The end of a long output.
fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(2000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

/// `join_prefix("", "<first 6 hex of md5(SOURCE/NAME)>/SOURCE/NAME")`: where `bundle` puts the
/// archive and index of a manifest named NAME (README, archive layout), with no `-p`.
fn bundle_folder(name: &str) -> String {
    let hash = hex::encode(Md5::digest(format!("{SOURCE}/{name}").as_bytes()));
    format!("{}/{SOURCE}/{name}", &hash[..6])
}

/// Writes a bundle of `rows` members of 0 to 100 bytes as `bundle` would lay it out: the
/// manifest, the index, the `.tar` and a `.tar.gz` of the same bytes, and `with_sources` the
/// source objects too. Returns the `.tar` key.
fn write_bundle(server: &LocalS3, rows: u64, with_sources: bool) -> std::io::Result<String> {
    // MANIFEST_KEY is `m/mem.0.index`: NAME is `mem.0`.
    let stem = bundle_folder("mem.0");
    let archive_key = format!("{stem}.tar");
    let index_key = format!("{stem}.index");
    let mut manifest = Hashed::new(server.create_object_file(MANIFESTS, MANIFEST_KEY)?);
    let mut index = Hashed::new(server.create_object_file(ARCHIVES, &index_key)?);
    let gz_key = format!("{archive_key}.gz");
    let mut tar = Hashed::new(server.create_object_file(ARCHIVES, &archive_key)?);
    let mut gz = flate2::write::GzEncoder::new(
        Hashed::new(server.create_object_file(ARCHIVES, &gz_key)?),
        flate2::Compression::fast(),
    );
    writeln!(index, "bucket,key,version_id,size,last_modified,etag,md5,storage_class,content_type,metadata,tags,member,header_offset,data_offset")?;
    let mut offset = 0u64;
    let mut member = Vec::with_capacity(1024);
    for i in 0..rows {
        let key = format!("obj/{:04}/{i}", i / 1000);
        let size = i % 101;
        let name = format!("{SOURCE}/{key}");
        let body: Vec<u8> = (0..size).map(|b| (b ^ i) as u8).collect();
        let mut header = tar::Header::new_ustar();
        header.set_path(&name)?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(1_763_773_200);
        header.set_cksum();
        member.clear();
        member.extend_from_slice(header.as_bytes());
        member.extend_from_slice(&body);
        member.resize(member.len().next_multiple_of(512), 0);
        let md5 = hex::encode(Md5::digest(&body));
        if with_sources {
            server.write_object_file(SOURCE, &key, &body)?;
        }
        writeln!(manifest, "{SOURCE},{key},{size}")?;
        writeln!(
            index,
            "{SOURCE},{key},,{size},2026-11-22T01:00:00Z,\"\"\"{md5}\"\"\",{md5},STANDARD,application/octet-stream,{{}},{{}},{name},{offset},{}",
            offset + 512
        )?;
        tar.write_all(&member)?;
        gz.write_all(&member)?;
        offset += member.len() as u64;
    }
    for out in [&mut tar as &mut dyn Write, &mut gz] {
        out.write_all(&[0; 1024])?;
    }
    server.record_etag(MANIFESTS, MANIFEST_KEY, &manifest.finish()?)?;
    server.record_etag(ARCHIVES, &index_key, &index.finish()?)?;
    server.record_etag(ARCHIVES, &archive_key, &tar.finish()?)?;
    server.record_etag(ARCHIVES, &gz_key, &gz.finish()?.finish()?)?;
    Ok(archive_key)
}

/// A buffered file writer that keeps the MD5 of what it wrote.
struct Hashed {
    file: std::io::BufWriter<std::fs::File>,
    md5: Md5,
}

impl Hashed {
    fn new(file: std::fs::File) -> Self {
        Hashed {
            file: std::io::BufWriter::new(file),
            md5: Md5::new(),
        }
    }

    /// Flushes the file; returns the MD5 (hex).
    fn finish(mut self) -> std::io::Result<String> {
        self.file.flush()?;
        Ok(hex::encode(self.md5.finalize()))
    }
}

impl Write for Hashed {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(bytes)?;
        self.md5.update(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Peak RSS of one command at a small and a large input.
#[derive(Debug, Clone, Copy)]
pub struct PeakPair {
    pub command: Measured,
    pub small_mib: f64,
    pub large_mib: f64,
}

impl PeakPair {
    /// Growth from the small input to the large one.
    pub fn growth_mib(&self) -> f64 {
        self.large_mib - self.small_mib
    }
}

/// Measures every command of `commands` over `small` and then `large` rows.
pub async fn peak_pairs(
    binary: &Path,
    commands: &[Measured],
    small: u64,
    large: u64,
    format: DataFormat,
) -> Vec<PeakPair> {
    let mut peaks = Vec::new();
    for rows in [small, large] {
        let inputs = Inputs::generate(rows, format, commands).await;
        let binary: PathBuf = binary.to_path_buf();
        let commands = commands.to_vec();
        let measured = tokio::task::spawn_blocking(move || {
            commands
                .iter()
                .map(|&command| (command, inputs.run(&binary, command).max_rss_mib))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        peaks.push(measured);
    }
    let [small, large] = [&peaks[0], &peaks[1]];
    small
        .iter()
        .zip(large)
        .map(|(&(command, small_mib), &(_, large_mib))| PeakPair {
            command,
            small_mib,
            large_mib,
        })
        .collect()
}
