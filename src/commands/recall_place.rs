//! Where the records of archived objects are, for the commands that find an object again
//! (`locate`, `restore`, `cat`, `extract`): the manifests `group` wrote, with the catalog kept
//! beside them, and the archives `bundle` wrote.

use crate::error::{Error, Result};
use crate::s3uri::S3Uri;

/// `--manifests` and `--archives`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RecallPlace {
    /// Where `group` (or `run`) wrote the bundle manifests: its `-b` bucket and `-p` prefix.
    /// The catalog of archived keys is kept there.
    #[arg(long = "manifests", value_name = "s3://BUCKET/PREFIX/")]
    pub manifests: Option<S3Uri>,
    /// Where `bundle` (or `run`) wrote the archives: its `-b` bucket and archive prefix.
    #[arg(long = "archives", value_name = "s3://ARCHIVE_BUCKET/PREFIX/")]
    pub archives: Option<S3Uri>,
}

/// Both places, known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// Bucket and prefix (no trailing `/`) of the manifests.
    pub manifests: S3Uri,
    pub archive_bucket: String,
    /// Prefix of the archives, no trailing `/`.
    pub archive_prefix: String,
}

impl RecallPlace {
    /// Both places, or a usage error saying what `what` needs.
    pub fn require(&self, what: &str) -> Result<Places> {
        match (&self.manifests, &self.archives) {
            (Some(manifests), Some(archives)) => Ok(Places {
                manifests: S3Uri::new(
                    manifests.bucket.clone(),
                    manifests.key.trim_matches('/').to_string(),
                ),
                archive_bucket: archives.bucket.clone(),
                archive_prefix: archives.key.trim_matches('/').to_string(),
            }),
            _ => Err(Error::Usage(format!(
                "{what} needs --manifests s3://BUCKET/PREFIX/ (where group wrote the bundle \
                 manifests) and --archives s3://ARCHIVE_BUCKET/PREFIX/ (where bundle wrote the \
                 archives)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_places_are_needed_and_trimmed() {
        let place = RecallPlace {
            manifests: Some("s3://m/out/".parse().expect("uri")),
            archives: Some("s3://a/".parse().expect("uri")),
        };
        let places = place.require("locate").expect("places");
        assert_eq!(places.manifests, S3Uri::new("m", "out"));
        assert_eq!(
            (
                places.archive_bucket.as_str(),
                places.archive_prefix.as_str()
            ),
            ("a", "")
        );
        let missing = RecallPlace {
            archives: None,
            ..place
        };
        let error = missing.require("locate").expect_err("refused");
        assert!(error.to_string().contains("--archives"), "{error}");
    }
}
