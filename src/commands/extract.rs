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
    Destination, Restored, PART_SIZE,
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

pub async fn run(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &ExtractArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let archive = Archive::open(&s3, &args.archive).await?;
    let rows = archive.select(&args.keys, args.prefix.as_deref())?;
    let destination = match (&args.to, &args.directory) {
        (Some(to), _) => Destination::S3(to.clone()),
        (None, Some(dir)) => {
            // Every name is checked before anything is written.
            let refused: Vec<String> = rows
                .iter()
                .filter_map(|row| local_path(&row.member).err().map(|e| e.to_string()))
                .collect();
            if !refused.is_empty() {
                return Err(Error::bad_input(
                    archive.index_uri.to_string(),
                    format!(
                        "{} member names would leave {}, nothing was extracted: {}",
                        refused.len(),
                        dir.display(),
                        refused.join("; ")
                    ),
                ));
            }
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                location: dir.display().to_string(),
                source,
            })?;
            Destination::Local(dir.clone())
        }
        (None, None) => {
            return Err(Error::Usage(
                "give --to s3://BUCKET/PREFIX or -C DIR".into(),
            ))
        }
    };
    let progress = crate::progress::objects_bar(Some(rows.len() as u64), "extracting");
    // Bytes a member may hold: its size, up to three parts (one filling, two uploading).
    let budget = ByteBudget::new(args.max_in_flight.0.max(4 * PART_SIZE as u64));
    let holds = |row: &IndexRow| row.size.min(3 * PART_SIZE as u64);
    let restored: Vec<Result<Restored>> = if archive.compression == Compression::None {
        stream::iter(rows)
            .map(|row| {
                let (s3, archive, destination) = (&s3, &archive, &destination);
                let (progress, budget) = (progress.clone(), budget.clone());
                let stopping = shutdown.is_requested();
                async move {
                    if stopping {
                        return Err(Error::Interrupted);
                    }
                    let _permit = budget.acquire(holds(row)).await;
                    // A body cut mid-member is read again; nothing of it was kept.
                    let mut attempt = 1;
                    let restored = loop {
                        let result = match member_cursor(s3, archive, row).await {
                            Ok(mut cursor) => restore(s3, &mut cursor, row, destination).await,
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
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await
    } else {
        // One pass over the decompressed stream; the members come in archive order, and small
        // ones upload in the background, `--concurrency` at a time.
        let mut cursor = stream_cursor(&s3, &archive).await?;
        let mut out = Vec::new();
        let mut uploads = Background::new();
        for row in rows {
            if shutdown.is_requested() {
                out.push(Err(Error::Interrupted));
                break;
            }
            // Background uploads hold at most one part each: bounded by their number.
            while uploads.len() >= args.concurrency.max(1)
                || (uploads.len() as u64 + 1) * PART_SIZE as u64 > budget.capacity()
            {
                if let Some(joined) = uploads.join_next().await {
                    out.push(joined_result(joined));
                }
            }
            progress.inc(1);
            match restore_in(&s3, &mut cursor, row, &destination, &mut Some(&mut uploads)).await {
                Ok(Some(restored)) => out.push(Ok(restored)),
                Ok(None) => {}
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        while let Some(joined) = uploads.join_next().await {
            out.push(joined_result(joined));
        }
        out
    };
    progress.finish_and_clear();
    let mut done = Vec::new();
    let mut first_error = None;
    for result in restored {
        match result {
            Ok(r) => done.push(r),
            // The first error is the exit's (and logged by main); the others are logged here.
            Err(e) if first_error.is_none() => first_error = Some(e),
            Err(Error::Interrupted) => {}
            Err(e) => tracing::error!("ERROR {e}"),
        }
    }
    done.sort_by(|a, b| a.key.cmp(&b.key));
    print_restored(&done, args.json);
    match first_error {
        Some(error) => Err(error),
        None => Ok(ExitCode::Success),
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

fn print_restored(done: &[Restored], json: bool) {
    if json {
        super::print_json(&done);
        return;
    }
    for r in done {
        println!(
            "{}\t{}\tarchived-version={}\tnew-version={}",
            r.target,
            r.size,
            r.archived_version_id.as_deref().unwrap_or("-"),
            r.new_version_id.as_deref().unwrap_or("-"),
        );
    }
    let bytes = done.iter().map(|r| r.size).sum();
    println!("restored {} objects ({})", done.len(), human_bytes(bytes));
}

pub async fn run_cat(aws: &AwsOptions, config: &SdkConfig, args: &CatArgs) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let archive = Archive::open(&s3, &args.archive).await?;
    let rows = archive.select(std::slice::from_ref(&args.key), None)?;
    let Some(row) = rows.first() else {
        return Err(Error::bad_input(
            archive.index_uri.to_string(),
            format!("no member for key `{}`", args.key),
        ));
    };
    cat(&s3, &archive, row).await?;
    Ok(ExitCode::Success)
}
