//! `ls`: an archive's members, from its index alone. The archive is not read, so an archive in
//! GLACIER or DEEP_ARCHIVE is listed at once.

use aws_config::SdkConfig;

use crate::archive::records::IndexRow;
use crate::aws::AwsOptions;
use crate::error::{ExitCode, Result};
use crate::extract::Archive;
use crate::s3uri::S3Uri;
use crate::size::human_bytes;

/// `s3bundler ls`.
#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {
    /// The archive (`…/NAME.tar`, `.tar.gz` or `.tar.zst`); its index is read from beside it.
    #[arg(value_name = "s3://ARCHIVE_BUCKET/…/NAME.tar")]
    pub archive: S3Uri,
    /// Only the objects whose key starts with this.
    #[arg(long = "prefix", value_name = "P")]
    pub prefix: Option<String>,
    /// Print JSON: `members` (each with its key, version, size, dates, ETag, class, content
    /// type and member name), then `objects` and `bytes`.
    #[arg(long)]
    pub json: bool,
}

/// Lists the members; a prefix that selects none is warned about.
pub async fn run(aws: &AwsOptions, config: &SdkConfig, args: &LsArgs) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let archive = Archive::at(&args.archive)?;
    let mut rows = archive.index(&s3).await?;
    let (mut objects, mut bytes) = (0u64, 0u64);
    if args.json {
        print!("{{\"members\":[");
    }
    while let Some(row) = rows.next().await {
        let row = row?;
        if args
            .prefix
            .as_ref()
            .is_some_and(|p| !row.key.starts_with(p.as_str()))
        {
            continue;
        }
        if args.json {
            let separator = if objects == 0 { "\n" } else { ",\n" };
            print!("{separator}{}", member_json(&row));
        } else {
            println!(
                "{}\t{}\t{}\t{}",
                row.key,
                row.size,
                row.last_modified,
                row.version_id.as_deref().unwrap_or("")
            );
        }
        objects += 1;
        bytes += row.size;
    }
    if args.json {
        let end = if objects == 0 { "" } else { "\n" };
        println!("{end}],\"objects\":{objects},\"bytes\":{bytes}}}");
    }
    match (&args.prefix, objects) {
        (Some(prefix), 0) => tracing::warn!(
            "no object of {} has a key starting with {prefix:?}",
            args.archive
        ),
        _ => tracing::info!(
            "{objects} objects ({}) in {}",
            human_bytes(bytes),
            args.archive
        ),
    }
    Ok(ExitCode::Success)
}

/// One member as a JSON object.
fn member_json(row: &IndexRow) -> serde_json::Value {
    serde_json::json!({
        "key": row.key,
        "version_id": row.version_id,
        "size": row.size,
        "last_modified": row.last_modified,
        "etag": row.etag,
        "storage_class": row.storage_class,
        "content_type": row.content_type,
        "member": row.member,
        "data_offset": row.data_offset,
    })
}
