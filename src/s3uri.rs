//! `s3://bucket/key` locations.

use std::fmt;
use std::str::FromStr;

/// A bucket and a key (or key prefix). The key may be empty (`s3://bucket` or `s3://bucket/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        S3Uri {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// The last path segment of the key (`manifest.json` for `s3://b/a/manifest.json`).
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }

    /// The key's folders, without the file name and without a trailing `/`.
    pub fn folder(&self) -> &str {
        self.key.rfind('/').map_or("", |i| &self.key[..i])
    }

    /// A sibling object in the same folder.
    pub fn sibling(&self, file_name: &str) -> S3Uri {
        let folder = self.folder();
        let key = if folder.is_empty() {
            file_name.to_string()
        } else {
            format!("{folder}/{file_name}")
        };
        S3Uri::new(self.bucket.clone(), key)
    }
}

impl FromStr for S3Uri {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{text}` is not an S3 location: expected s3://bucket/key"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "`{text}` has no bucket name: expected s3://bucket/key"
            ));
        }
        Ok(S3Uri::new(bucket, key))
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// A bucket name given either plainly or as an ARN (`arn:aws:s3:::bucket`), as inventory
/// manifests write `destinationBucket`.
pub fn bucket_name(text: &str) -> &str {
    text.strip_prefix("arn:")
        .and_then(|arn| arn.rsplit(':').next())
        .unwrap_or(text)
}

/// A bucket name as `-b` takes it (clap's value parser): a URI or a bucket with a prefix is
/// refused before any request, saying where each part goes. Legacy names (capitals,
/// underscores) pass; S3 judges the rest.
pub fn parse_bucket(text: &str) -> Result<String, String> {
    let (bucket, prefix) = match text.strip_prefix("s3://") {
        Some(rest) => rest.split_once('/').unwrap_or((rest, "")),
        None => text.split_once('/').unwrap_or((text, "")),
    };
    let prefix = prefix.trim_end_matches('/');
    let hint = if prefix.is_empty() {
        format!("give the bucket name alone: {bucket}")
    } else {
        format!("give the bucket name here ({bucket}) and the key prefix with -p ({prefix})")
    };
    if bucket.is_empty() || bucket.chars().any(|c| c.is_whitespace() || c == ':') {
        return Err(format!("`{text}` is not a bucket name"));
    }
    if text.starts_with("s3://") || text.contains('/') {
        return Err(format!("`{text}` is not a bucket name: {hint}"));
    }
    Ok(bucket.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_argument_refuses_uris_and_prefixes_saying_where_each_part_goes() {
        assert_eq!(parse_bucket("archive"), Ok("archive".to_string()));
        assert_eq!(
            parse_bucket("Legacy_Bucket"),
            Ok("Legacy_Bucket".to_string())
        );
        let uri = parse_bucket("s3://archive").expect_err("uri");
        assert!(
            uri.ends_with("give the bucket name alone: archive"),
            "{uri}"
        );
        let with_prefix = parse_bucket("archive/manifests/").expect_err("prefix");
        assert!(
            with_prefix.contains("(archive)") && with_prefix.contains("-p (manifests)"),
            "{with_prefix}"
        );
        assert!(parse_bucket("").is_err() && parse_bucket("a b").is_err());
        assert!(parse_bucket("arn:aws:s3:::x").is_err());
    }

    #[test]
    fn parses_bucket_and_key() {
        let uri: S3Uri = "s3://inv/src/cfg/2026-11-22T01-00Z/manifest.json"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(uri.bucket, "inv");
        assert_eq!(uri.key, "src/cfg/2026-11-22T01-00Z/manifest.json");
        assert_eq!(uri.file_name(), "manifest.json");
        assert_eq!(uri.folder(), "src/cfg/2026-11-22T01-00Z");
        assert_eq!(
            uri.sibling("manifest.checksum").key,
            "src/cfg/2026-11-22T01-00Z/manifest.checksum"
        );
        assert_eq!(
            uri.to_string(),
            "s3://inv/src/cfg/2026-11-22T01-00Z/manifest.json"
        );
    }

    #[test]
    fn bucket_only_and_errors() {
        let uri: S3Uri = "s3://bucket".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((uri.bucket.as_str(), uri.key.as_str()), ("bucket", ""));
        assert_eq!(uri.sibling("x").key, "x");
        assert!("bucket/key".parse::<S3Uri>().is_err());
        assert!("s3:///key".parse::<S3Uri>().is_err());
    }

    #[test]
    fn bucket_names_from_arns() {
        assert_eq!(
            bucket_name("arn:aws:s3:::filemanager-inventory-test"),
            "filemanager-inventory-test"
        );
        assert_eq!(bucket_name("plain-bucket"), "plain-bucket");
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{cases, garbage_text, odd_text};

    proptest! {
        #![proptest_config(cases(2048))]

        #[test]
        fn garbage_s3_uris_never_panic(text in garbage_text(), prefixed in garbage_text()) {
            for text in [text, format!("s3://{prefixed}")] {
                if let Ok(uri) = text.parse::<S3Uri>() {
                    let _ = (uri.file_name(), uri.folder(), uri.sibling("x"));
                }
                let _ = bucket_name(&text);
            }
        }

        #[test]
        fn s3_uris_round_trip(bucket in "[a-z0-9.-]{1,63}", key in odd_text()) {
            let uri = S3Uri::new(bucket, key);
            prop_assert_eq!(uri.to_string().parse::<S3Uri>(), Ok(uri));
        }
    }
}
