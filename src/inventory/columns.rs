//! Which inventory column holds which field. Columns are matched by name, whatever their order,
//! in the spellings AWS uses: `LastModifiedDate` in CSV schemas, `last_modified_date` in ORC and
//! Parquet. Unknown columns are ignored.

use crate::error::{Error, Result};

/// Positions of the fields s3bundler uses within a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    pub width: usize,
    pub bucket: usize,
    pub key: usize,
    pub size: usize,
    pub version_id: Option<usize>,
    pub is_latest: Option<usize>,
    pub is_delete_marker: Option<usize>,
    pub last_modified: Option<usize>,
    pub etag: Option<usize>,
    pub storage_class: Option<usize>,
    pub intelligent_tiering_access_tier: Option<usize>,
}

/// `LastModifiedDate`, `last_modified_date` and `lastModifiedDate` all become `lastmodifieddate`.
fn normalize(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

impl ColumnMap {
    /// Maps column names (in file order) to fields. Bucket, Key and Size are required.
    pub fn from_names<S: AsRef<str>>(names: &[S], location: &str) -> Result<Self> {
        let normalized: Vec<String> = names.iter().map(|n| normalize(n.as_ref())).collect();
        let find = |wanted: &str| normalized.iter().position(|n| n == wanted);
        let require = |wanted: &str, shown: &str| {
            find(wanted).ok_or_else(|| {
                Error::bad_input(
                    location,
                    format!("the inventory has no `{shown}` column; s3bundler needs Bucket, Key and Size (add the Size field to the inventory configuration)"),
                )
            })
        };
        Ok(ColumnMap {
            width: names.len(),
            bucket: require("bucket", "Bucket")?,
            key: require("key", "Key")?,
            size: require("size", "Size")?,
            version_id: find("versionid"),
            is_latest: find("islatest"),
            is_delete_marker: find("isdeletemarker"),
            last_modified: find("lastmodifieddate"),
            etag: find("etag"),
            storage_class: find("storageclass"),
            intelligent_tiering_access_tier: find("intelligenttieringaccesstier"),
        })
    }

    /// Parses a CSV `fileSchema`: comma-separated column names.
    pub fn from_csv_schema(schema: &str, location: &str) -> Result<Self> {
        let names: Vec<&str> = schema.split(',').map(str::trim).collect();
        Self::from_names(&names, location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_real_versioned_csv_schema() {
        let schema = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus, ObjectLockRetainUntilDate, ObjectLockMode, ObjectLockLegalHoldStatus, IntelligentTieringAccessTier, BucketKeyStatus, ChecksumAlgorithm";
        let map = ColumnMap::from_csv_schema(schema, "m").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((map.width, map.bucket, map.key, map.size), (18, 0, 1, 5));
        assert_eq!(map.version_id, Some(2));
        assert_eq!(map.etag, Some(7));
        assert_eq!(map.intelligent_tiering_access_tier, Some(15));
    }

    #[test]
    fn snake_case_names_match_too() {
        let map = ColumnMap::from_names(
            &["key", "bucket", "size", "e_tag", "last_modified_date"],
            "m",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (map.bucket, map.key, map.etag, map.last_modified),
            (1, 0, Some(3), Some(4))
        );
        assert_eq!(map.version_id, None);
    }

    #[test]
    fn missing_required_column_names_it() {
        let err = ColumnMap::from_csv_schema("Bucket, Key, ETag", "s3://inv/manifest.json")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("`Size`") && err.contains("s3://inv/manifest.json"),
            "{err}"
        );
    }
}
