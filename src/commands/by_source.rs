//! `cat` and `extract` of `s3://SOURCE_BUCKET/KEY`: the object as it was, found through the
//! catalog (`locate`), then read from its archive as `cat ARCHIVE KEY` and
//! `extract ARCHIVE -k KEY` do.

use std::collections::BTreeMap;

use aws_config::SdkConfig;

use super::extract::{
    cat_archive, destination_of, extract_ready, ready_to_extract, CatArgs, ExtractArgs, Report,
};
use super::locate::{locate, DeadLettered, LocateReport, Located};
use super::recall_place::RecallPlace;
use crate::aws::AwsOptions;
use crate::catalog::KeyQuery;
use crate::error::{Error, ExitCode, Result};
use crate::extract::{check_readable, restore_copy, Sink, Stdout};
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
    let query = KeyQuery::of_object(what, &object.key, prefix)?;
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
    let Some(located) = newest(&args.archive, &report.located)? else {
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

/// The newest of the archived versions of one key (sorted by last-modified time). S3 keeps
/// last-modified times to the second: when two versions share the newest one, which is newer is
/// unknown, and the user is asked to choose.
fn newest<'a>(object: &S3Uri, located: &'a [Located]) -> Result<Option<&'a Located>> {
    let Some(last) = located.last() else {
        return Ok(None);
    };
    let mut tied: Vec<&str> = located
        .iter()
        .filter(|l| l.last_modified == last.last_modified && l.version_id != last.version_id)
        .map(|l| l.version_id.as_deref().unwrap_or("null"))
        .collect();
    if tied.is_empty() {
        return Ok(Some(last));
    }
    tied.push(last.version_id.as_deref().unwrap_or("null"));
    Err(Error::Usage(format!(
        "{object}: {} archived versions were last modified in the same second ({}), so which \
         is newest is unknown: give --version-id, one of {}",
        tied.len(),
        last.last_modified,
        tied.join(", ")
    )))
}

/// A big object's server-side copy, to stdout.
async fn cat_copy(s3: &S3, located: &Located) -> Result<ExitCode> {
    let copy: S3Uri = located.archive.parse().map_err(Error::Usage)?;
    check_readable(s3, &copy).await?;
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
    let mut copies = Vec::new();
    for located in &report.located {
        match &located.copy_row {
            Some(row) => {
                copies.push((located.archive.parse::<S3Uri>().map_err(Error::Usage)?, row))
            }
            None => by_archive
                .entry(located.archive.clone())
                .or_default()
                .push(located),
        }
    }
    // Every archive and copy is checked (readable, not cold) and planned before anything is
    // written.
    let destination = destination_of(args)?;
    let mut ready = Vec::new();
    for (archive, found) in by_archive {
        let mut keys: Vec<String> = found.iter().map(|l| l.key.clone()).collect();
        keys.dedup();
        let in_archive = ExtractArgs {
            archive: archive.parse().map_err(Error::Usage)?,
            keys,
            prefix: None,
            versions: version_id.map(|v| vec![v.to_string()]).unwrap_or_default(),
            place: RecallPlace::default(),
            ..args.clone()
        };
        let archive_ready = ready_to_extract(&s3, &in_archive, &destination).await?;
        ready.push((in_archive, archive_ready));
    }
    for (copy, _) in &copies {
        check_readable(&s3, copy).await?;
    }
    let mut extracted = Report::new(args.json);
    for (in_archive, archive_ready) in ready {
        extract_ready(
            &s3,
            &in_archive,
            &destination,
            archive_ready,
            &shutdown,
            &mut extracted,
        )
        .await;
    }
    for (copy, row) in copies {
        extracted.add(restore_copy(&s3, &copy, row, &destination).await);
    }
    extracted.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: Option<&str>, modified: &str) -> Located {
        Located {
            bucket: "src".into(),
            key: "k".into(),
            version_id: id.map(str::to_string),
            size: 1,
            etag: "e".into(),
            last_modified: modified.into(),
            archive: "s3://arch/a.tar".into(),
            copy: false,
            member: "src/k".into(),
            header_offset: Some(0),
            data_offset: Some(512),
            index: "s3://arch/a.index".into(),
            manifest: "s3://m/m.0.index".into(),
            archived: None,
            storage_class: None,
            needs_restore: false,
            restore: None,
            copy_row: None,
        }
    }

    #[test]
    fn the_newest_version_is_the_last_modified_unless_two_share_its_second() {
        let object: S3Uri = "s3://src/k".parse().expect("uri");
        assert!(newest(&object, &[]).expect("none").is_none());
        let found = [
            version(None, "2026-01-01T00:00:00Z"),
            version(Some("v2"), "2026-01-02T00:00:00Z"),
        ];
        let picked = newest(&object, &found).expect("one").expect("some");
        assert_eq!(picked.version_id.as_deref(), Some("v2"));
        // The same version archived twice (two weekly runs) is not a tie.
        let twice = [
            version(Some("v2"), "2026-01-02T00:00:00Z"),
            version(Some("v2"), "2026-01-02T00:00:00Z"),
        ];
        assert!(newest(&object, &twice).is_ok());
        let tied = [
            version(None, "2026-01-02T00:00:00Z"),
            version(Some("v2"), "2026-01-02T00:00:00Z"),
        ];
        let error = newest(&object, &tied).expect_err("tied").to_string();
        assert!(
            error.contains("--version-id") && error.contains("null, v2"),
            "{error}"
        );
    }
}
