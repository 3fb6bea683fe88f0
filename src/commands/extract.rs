//! `extract`: restores members of an archive to S3 (content headers, metadata and tags) or to a
//! local folder (`user.s3.*` xattrs), and `cat`: one member's bytes to stdout.

use std::path::PathBuf;

use aws_config::SdkConfig;
use futures_util::{stream, StreamExt};

use crate::archive::layout::Compression;
use crate::archive::records::IndexRow;
use crate::aws::AwsOptions;
use crate::bundle::budget::ByteBudget;
use crate::error::{Error, ExitCode, Result};
use crate::extract::{
    cat, member_cursor, path::local_path, restore, restore_in, stream_cursor, Archive, Background,
    Destination, Restored, Selection, PART_SIZE,
};
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;
use crate::size::{human_bytes, ByteSize};

/// Tries of one member of an uncompressed archive when its body is cut or its GET keeps failing.
const MEMBER_ATTEMPTS: u32 = 5;

/// `s3bundler extract`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// The archive (`…/NAME.tar`, `.tar.gz` or `.tar.zst`); its index is read from beside it.
    #[arg(value_name = "s3://ARCHIVE_BUCKET/…/NAME.tar")]
    pub archive: S3Uri,
    /// Restore this object (its key, as in the index); repeat for more. Default: every object.
    #[arg(short = 'k', long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// Restore only objects whose key starts with this.
    #[arg(long = "prefix", value_name = "P")]
    pub prefix: Option<String>,
    /// Restore to this bucket, under this key prefix (`s3://SOURCE` puts objects back where
    /// they were).
    #[arg(
        long = "to",
        value_name = "s3://BUCKET/PREFIX",
        conflicts_with = "directory",
        required_unless_present = "directory"
    )]
    pub to: Option<S3Uri>,
    /// Write files under this folder instead (member names `SOURCE/KEY`, as tar does).
    #[arg(short = 'C', long = "directory", value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// Members restored at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Bytes of member data held in memory at most (a member larger than a part holds at most
    /// three parts' worth while it streams).
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub max_in_flight: ByteSize,
    /// Print the list of restored objects as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `s3bundler cat`.
#[derive(Debug, Clone, clap::Args)]
pub struct CatArgs {
    /// The archive (`…/NAME.tar`); its index is read from beside it.
    #[arg(value_name = "s3://ARCHIVE_BUCKET/…/NAME.tar")]
    pub archive: S3Uri,
    /// The object's key, as in the index.
    pub key: String,
}

/// Refused member names listed in the error; the others are counted.
const REFUSED_LISTED: usize = 20;

pub async fn run(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &ExtractArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let archive = Archive::at(&args.archive)?;
    let selection = Selection {
        keys: args.keys.clone(),
        prefix: args.prefix.clone(),
    };
    let destination = match (&args.to, &args.directory) {
        (Some(to), _) => Destination::S3(to.clone()),
        (None, Some(dir)) => Destination::Local(dir.clone()),
        (None, None) => {
            return Err(Error::Usage(
                "give --to s3://BUCKET/PREFIX or -C DIR".into(),
            ))
        }
    };
    let selected = check_before_writing(&s3, &archive, &selection, &destination).await?;
    if let Destination::Local(dir) = &destination {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            location: dir.display().to_string(),
            source,
        })?;
    }
    let progress = crate::progress::objects_bar(selected, "extracting");
    // Bytes a member may hold: its size, up to three parts (one filling, two uploading).
    let budget = ByteBudget::new(args.max_in_flight.0.max(4 * PART_SIZE as u64));
    let holds = |row: &IndexRow| row.size.min(3 * PART_SIZE as u64);
    let mut rows = archive.index(&s3).await?;
    let mut report = Report::new(args.json);
    if archive.compression == Compression::None {
        // The index is read as members restore, a batch ahead of them.
        let wanted = stream::unfold(
            &mut rows,
            |rows| async move { Some((rows.next().await?, rows)) },
        )
        .filter(|row| std::future::ready(!matches!(row, Ok(row) if !selection.wants(row))));
        let restores = wanted
            .map(|row| {
                let (s3, archive, destination) = (&s3, &archive, &destination);
                let (progress, budget) = (progress.clone(), budget.clone());
                let stopping = shutdown.is_requested();
                async move {
                    let row = row?;
                    if stopping {
                        return Err(Error::Interrupted);
                    }
                    let _permit = budget.acquire(holds(&row)).await;
                    // A body cut mid-member is read again; nothing of it was kept.
                    let mut attempt = 1;
                    let restored = loop {
                        let result = match member_cursor(s3, archive, &row).await {
                            Ok(mut cursor) => restore(s3, &mut cursor, &row, destination).await,
                            Err(e) => Err(e),
                        };
                        match result {
                            Err(Error::Remote { detail, .. }) if attempt < MEMBER_ATTEMPTS => {
                                tracing::debug!("{}: {detail}; reading it again", row.key);
                                attempt += 1;
                            }
                            other => break other,
                        }
                    };
                    progress.inc(1);
                    restored
                }
            })
            .buffer_unordered(args.concurrency.max(1));
        futures_util::pin_mut!(restores);
        while let Some(result) = restores.next().await {
            report.add(result);
        }
    } else {
        // One pass over the decompressed stream; the members come in archive order, and small
        // ones upload in the background, `--concurrency` at a time.
        let mut cursor = stream_cursor(&s3, &archive).await?;
        let mut uploads = Background::new();
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(row) if !selection.wants(&row) => continue,
                Ok(row) => row,
                Err(e) => {
                    report.add(Err(e));
                    break;
                }
            };
            if shutdown.is_requested() {
                report.add(Err(Error::Interrupted));
                break;
            }
            // Background uploads hold at most one part each: bounded by their number.
            while uploads.len() >= args.concurrency.max(1)
                || (uploads.len() as u64 + 1) * PART_SIZE as u64 > budget.capacity()
            {
                if let Some(joined) = uploads.join_next().await {
                    report.add(joined_result(joined));
                }
            }
            progress.inc(1);
            match restore_in(
                &s3,
                &mut cursor,
                &row,
                &destination,
                &mut Some(&mut uploads),
            )
            .await
            {
                Ok(Some(restored)) => report.add(Ok(restored)),
                Ok(None) => {}
                Err(e) => {
                    report.add(Err(e));
                    break;
                }
            }
        }
        while let Some(joined) = uploads.join_next().await {
            report.add(joined_result(joined));
        }
    }
    progress.finish_and_clear();
    report.finish()
}

/// Reads the index once before anything is written, when there is something to refuse: a key
/// asked for that is not in the index, or (to a folder) a selected member whose name would
/// leave it. Returns how many members are selected, when it read the index to know.
async fn check_before_writing(
    s3: &crate::s3::S3,
    archive: &Archive,
    selection: &Selection,
    destination: &Destination,
) -> Result<Option<u64>> {
    let folder = match destination {
        Destination::Local(dir) => Some(dir),
        Destination::S3(_) => None,
    };
    if selection.keys.is_empty() && folder.is_none() {
        return Ok(None);
    }
    let mut rows = archive.index(s3).await?;
    let mut found = vec![false; selection.keys.len()];
    let (mut selected, mut refused) = (0u64, 0usize);
    let mut listed = Vec::new();
    while let Some(row) = rows.next().await {
        let row = row?;
        selection.mark_found(&row, &mut found);
        if !selection.wants(&row) {
            continue;
        }
        selected += 1;
        if let Some(Err(e)) = folder.map(|_| local_path(&row.member)) {
            refused += 1;
            if listed.len() < REFUSED_LISTED {
                listed.push(e.to_string());
            }
        }
    }
    let missing = selection.not_found(&found);
    if !missing.is_empty() {
        return Err(Error::bad_input(
            archive.index_uri.to_string(),
            format!("no member for key {missing:?}; list the index to see what the archive holds"),
        ));
    }
    if let (Some(dir), true) = (folder, refused > 0) {
        let more = refused - listed.len();
        return Err(Error::bad_input(
            archive.index_uri.to_string(),
            format!(
                "{refused} member names would leave {}, nothing was extracted: {}{}",
                dir.display(),
                listed.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ),
        ));
    }
    Ok(Some(selected))
}

/// What `extract` prints: each restored object as it is done (in the order they finish; with
/// `--json`, elements of one array), then the count; errors after the first are logged.
struct Report {
    json: bool,
    objects: u64,
    bytes: u64,
    first_error: Option<Error>,
}

impl Report {
    fn new(json: bool) -> Self {
        if json {
            print!("[");
        }
        Report {
            json,
            objects: 0,
            bytes: 0,
            first_error: None,
        }
    }

    fn add(&mut self, result: Result<Restored>) {
        let restored = match result {
            Ok(restored) => restored,
            // The first error is the exit's (and logged by main); the others are logged here.
            Err(e) if self.first_error.is_none() => {
                self.first_error = Some(e);
                return;
            }
            Err(Error::Interrupted) => return,
            Err(e) => {
                tracing::error!("ERROR {e}");
                return;
            }
        };
        if self.json {
            let separator = if self.objects == 0 { "\n" } else { ",\n" };
            let element = serde_json::to_string(&restored).unwrap_or_default();
            print!("{separator}{element}");
        } else {
            println!(
                "{}\t{}\tarchived-version={}\tnew-version={}",
                restored.target,
                restored.size,
                restored.archived_version_id.as_deref().unwrap_or("-"),
                restored.new_version_id.as_deref().unwrap_or("-"),
            );
        }
        self.objects += 1;
        self.bytes += restored.size;
    }

    fn finish(self) -> Result<ExitCode> {
        if self.json {
            println!("{}]", if self.objects == 0 { "" } else { "\n" });
        } else {
            println!(
                "restored {} objects ({})",
                self.objects,
                human_bytes(self.bytes)
            );
        }
        match self.first_error {
            Some(error) => Err(error),
            None => Ok(ExitCode::Success),
        }
    }
}

fn joined_result(
    joined: std::result::Result<Result<Restored>, tokio::task::JoinError>,
) -> Result<Restored> {
    joined.map_err(|e| Error::Io {
        location: "an upload task".into(),
        source: std::io::Error::other(e.to_string()),
    })?
}

pub async fn run_cat(aws: &AwsOptions, config: &SdkConfig, args: &CatArgs) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let archive = Archive::at(&args.archive)?;
    let selection = Selection {
        keys: vec![args.key.clone()],
        prefix: None,
    };
    let mut rows = archive.index(&s3).await?;
    while let Some(row) = rows.next().await {
        let row = row?;
        if selection.wants(&row) {
            cat(&s3, &archive, &row).await?;
            return Ok(ExitCode::Success);
        }
    }
    Err(Error::bad_input(
        archive.index_uri.to_string(),
        format!("no member for key `{}`", args.key),
    ))
}
