//! `cat` and `extract` of `s3://SOURCE_BUCKET/KEY`: the object as it was, found through the
//! catalog (`locate`), then read from its archive as `cat ARCHIVE KEY` and
//! `extract ARCHIVE -k KEY` do.

use std::collections::BTreeMap;

use aws_config::SdkConfig;

use super::extract::{cat_archive, extract_archive, CatArgs, ExtractArgs};
use super::locate::{locate, DeadLettered, LocateReport, Located};
use super::recall_place::RecallPlace;
use crate::aws::AwsOptions;
use crate::catalog::KeyQuery;
use crate::error::{Error, ExitCode, Result};
use crate::extract::{Sink, Stdout};
use crate::s3::S3;
use crate::s3uri::S3Uri;
use crate::shutdown::Shutdown;

/// Finds what `object` (a key, or with `prefix` a bucket) names among the archives.
async fn find(
    s3: &S3,
    place: &RecallPlace,
    what: &str,
    object: &S3Uri,
    prefix: Option<&str>,
    version_id: Option<&str>,
) -> Result<LocateReport> {
    let places = place.require(what)?;
    let query = match (prefix, object.key.as_str()) {
        (Some(prefix), "") => KeyQuery::Prefix(prefix.to_string()),
        (None, key) if !key.is_empty() => KeyQuery::Key(key.to_string()),
        _ => {
            return Err(Error::Usage(format!(
                "{what}: give s3://SOURCE_BUCKET/KEY, or s3://SOURCE_BUCKET with --prefix P"
            )))
        }
    };
    locate(s3, &places, &object.bucket, &query, version_id).await
}

/// Why nothing was found, as an error that names the DLQ row when there is one.
fn not_archived(object: &S3Uri, dead: &[DeadLettered], not_bundled: &[String]) -> Error {
    let detail = match (dead.first(), not_bundled.first()) {
        (Some(dead), _) => format!(
            "not archived: {} ({}) in {}",
            dead.reason, dead.detail, dead.dlq
        ),
        (None, Some(manifest)) => {
            format!("not archived yet: {manifest} lists it but is not bundled")
        }
        (None, None) => "not archived: no manifest in the catalog lists it".to_string(),
    };
    Error::NotArchived {
        object: object.to_string(),
        detail,
    }
}

/// `cat s3://SOURCE_BUCKET/KEY`: the newest archived version (or `--version-id`'s).
pub async fn cat(aws: &AwsOptions, config: &SdkConfig, args: &CatArgs) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let report = find(
        &s3,
        &args.place,
        "cat s3://SOURCE_BUCKET/KEY",
        &args.archive,
        None,
        args.version_id.as_deref(),
    )
    .await?;
    // Sorted by last-modified time: the last is the newest.
    let Some(located) = report.located.last() else {
        return Err(not_archived(
            &args.archive,
            &report.dead_lettered,
            &report.not_bundled,
        ));
    };
    if located.copy {
        return cat_copy(&s3, located).await;
    }
    let archive: S3Uri = located.archive.parse().map_err(Error::Usage)?;
    let in_archive = CatArgs {
        archive,
        key: Some(located.key.clone()),
        version_id: located.version_id.clone(),
        place: RecallPlace::default(),
    };
    cat_archive(aws, config, &in_archive).await
}

/// A big object's server-side copy, to stdout.
async fn cat_copy(s3: &S3, located: &Located) -> Result<ExitCode> {
    let copy: S3Uri = located.archive.parse().map_err(Error::Usage)?;
    let mut got = s3
        .get_stream(&copy)
        .await
        .map_err(|f| Error::reading("GetObject", copy.to_string(), f))?;
    while let Some(chunk) = got.body.try_next().await.map_err(|e| {
        Error::reading(
            "GetObject",
            copy.to_string(),
            crate::error::RemoteFailure::Transient(e.to_string()),
        )
    })? {
        Stdout.write(chunk).await?;
    }
    Ok(ExitCode::Success)
}

/// `extract s3://SOURCE_BUCKET/KEY` (or `--prefix`): each archive that holds a found object
/// is extracted for those objects, as `extract ARCHIVE -k KEY…` would.
pub async fn extract(
    aws: &AwsOptions,
    config: &SdkConfig,
    args: &ExtractArgs,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let s3 = aws.s3(config);
    let version_id = match args.versions.as_slice() {
        [] => None,
        [one] => Some(one.as_str()),
        _ => {
            return Err(Error::Usage(
                "with s3://SOURCE_BUCKET/KEY, give at most one --version-id".to_string(),
            ))
        }
    };
    if !args.keys.is_empty() {
        return Err(Error::Usage(
            "-k names keys in one archive; with s3://SOURCE_BUCKET/KEY give the key in the URI \
             (or --prefix)"
                .to_string(),
        ));
    }
    let report = find(
        &s3,
        &args.place,
        "extract s3://SOURCE_BUCKET/KEY",
        &args.archive,
        args.prefix.as_deref(),
        version_id,
    )
    .await?;
    if report.located.is_empty() {
        return Err(not_archived(
            &args.archive,
            &report.dead_lettered,
            &report.not_bundled,
        ));
    }
    let mut by_archive: BTreeMap<String, Vec<&Located>> = BTreeMap::new();
    for located in &report.located {
        if located.copy {
            tracing::warn!(
                "s3://{}/{} is a big object, kept as its own copy {}: copy it back with any S3 tool",
                located.bucket,
                located.key,
                located.archive
            );
        } else {
            by_archive
                .entry(located.archive.clone())
                .or_default()
                .push(located);
        }
    }
    let mut code = ExitCode::Success;
    for (archive, found) in by_archive {
        let mut keys: Vec<String> = found.iter().map(|l| l.key.clone()).collect();
        keys.dedup();
        let versions = version_id.map(|v| vec![v.to_string()]).unwrap_or_default();
        let in_archive = ExtractArgs {
            archive: archive.parse().map_err(Error::Usage)?,
            keys,
            prefix: None,
            versions,
            place: RecallPlace::default(),
            ..args.clone()
        };
        let done = extract_archive(aws, config, &in_archive, shutdown.clone()).await?;
        if done != ExitCode::Success {
            code = done;
        }
    }
    Ok(code)
}
