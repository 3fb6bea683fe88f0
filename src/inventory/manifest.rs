//! The inventory's `manifest.json` and `manifest.checksum`.

use md5::{Digest, Md5};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The data file format named by `fileFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Orc,
    Parquet,
}

/// One entry of `files[]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DataFile {
    pub key: String,
    pub size: u64,
    #[serde(rename = "MD5checksum")]
    pub md5_checksum: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    source_bucket: String,
    destination_bucket: String,
    file_format: String,
    file_schema: String,
    files: Vec<DataFile>,
    #[serde(default)]
    creation_timestamp: Option<String>,
}

/// A parsed and validated `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryManifest {
    pub source_bucket: String,
    /// As written by S3: usually an ARN (`arn:aws:s3:::bucket`).
    pub destination_bucket: String,
    pub file_format: FileFormat,
    pub file_schema: String,
    pub files: Vec<DataFile>,
    pub creation_timestamp: Option<String>,
}

impl InventoryManifest {
    /// Parses `manifest.json`; `location` names it in errors.
    pub fn parse(json: &[u8], location: &str) -> Result<Self> {
        let raw: RawManifest = serde_json::from_slice(json).map_err(|e| {
            Error::bad_input(
                location,
                format!("not a valid S3 Inventory manifest.json: {e}"),
            )
        })?;
        let file_format = match raw.file_format.as_str() {
            "CSV" => FileFormat::Csv,
            "ORC" => FileFormat::Orc,
            "Parquet" => FileFormat::Parquet,
            other => {
                return Err(Error::bad_input(
                    location,
                    format!("unknown fileFormat `{other}`: expected CSV, ORC or Parquet"),
                ))
            }
        };
        for file in &raw.files {
            if file.md5_checksum.len() != 32
                || !file.md5_checksum.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(Error::bad_input(
                    location,
                    format!(
                        "files[] entry `{}` has MD5checksum `{}`, which is not 32 hex digits",
                        file.key, file.md5_checksum
                    ),
                ));
            }
        }
        Ok(InventoryManifest {
            source_bucket: raw.source_bucket,
            destination_bucket: raw.destination_bucket,
            file_format,
            file_schema: raw.file_schema,
            files: raw.files,
            creation_timestamp: raw.creation_timestamp,
        })
    }

    /// Total compressed bytes of all data files, for progress.
    pub fn total_data_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Checks `manifest.json` against the MD5 hex held by `manifest.checksum`.
pub fn verify_checksum(manifest_json: &[u8], checksum_file: &[u8], location: &str) -> Result<()> {
    let expected = std::str::from_utf8(checksum_file)
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if expected.len() != 32 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::bad_input(
            location,
            "manifest.checksum does not hold an MD5 hex digest",
        ));
    }
    let actual = hex::encode(Md5::digest(manifest_json));
    if actual != expected {
        return Err(Error::bad_input(
            location,
            format!("manifest.json has MD5 {actual} but manifest.checksum says {expected}: the report is damaged or was changed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{
      "sourceBucket" : "src", "destinationBucket" : "arn:aws:s3:::inv", "version" : "2016-11-30",
      "creationTimestamp" : "1715043600000", "fileFormat" : "CSV",
      "fileSchema" : "Bucket, Key, Size",
      "files" : [ { "key" : "src/cfg/data/a.csv.gz", "size" : 331, "MD5checksum" : "c473bcc2407d0a5cec5229b21d967e59" } ]
    }"#;

    #[test]
    fn parses_a_manifest() {
        let m =
            InventoryManifest::parse(MANIFEST.as_bytes(), "m").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.file_format, FileFormat::Csv);
        assert_eq!(m.files.len(), 1);
        assert_eq!(m.files[0].size, 331);
        assert_eq!(m.total_data_bytes(), 331);
    }

    fn error_of(json: &str) -> String {
        match InventoryManifest::parse(json.as_bytes(), "s3://inv/manifest.json") {
            Ok(_) => panic!("accepted {json}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn rejects_malformed_json_missing_fields_and_unknown_formats() {
        assert!(error_of("{not json").contains("s3://inv/manifest.json"));
        assert!(error_of(&MANIFEST.replace("\"files\"", "\"nofiles\""))
            .contains("missing field `files`"));
        assert!(error_of(&MANIFEST.replace("\"CSV\"", "\"JSONL\""))
            .contains("unknown fileFormat `JSONL`"));
        assert!(
            error_of(&MANIFEST.replace("c473bcc2407d0a5cec5229b21d967e59", "xyz"))
                .contains("MD5checksum")
        );
    }

    #[test]
    fn checksum_file_is_verified() {
        let json = MANIFEST.as_bytes();
        let good = format!("{}\n", hex::encode(Md5::digest(json)));
        assert!(verify_checksum(json, good.as_bytes(), "c").is_ok());
        assert!(verify_checksum(json, b"00000000000000000000000000000000\n", "c").is_err());
        assert!(verify_checksum(json, b"garbage", "c").is_err());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{cases, garbage, mutated, mutated_from, odd_text, ok_or_names};

    /// A valid `manifest.json` with odd keys and 0 to 4 data files.
    fn valid_manifest() -> impl Strategy<Value = Vec<u8>> {
        let format = proptest::sample::select(vec!["CSV", "ORC", "Parquet"]);
        (
            odd_text(),
            format,
            proptest::collection::vec((odd_text(), any::<u64>(), any::<[u8; 16]>()), 0..4),
        )
            .prop_map(|(bucket, format, files)| {
                let files: Vec<_> = files
                    .into_iter()
                    .map(|(key, size, md5)| {
                        serde_json::json!({"key": key, "size": size, "MD5checksum": hex::encode(md5)})
                    })
                    .collect();
                serde_json::json!({
                    "sourceBucket": bucket, "destinationBucket": "arn:aws:s3:::inv",
                    "version": "2016-11-30", "creationTimestamp": "1715043600000",
                    "fileFormat": format, "fileSchema": "Bucket, Key, Size", "files": files,
                })
                .to_string()
                .into_bytes()
            })
    }

    fn named(result: Result<impl Sized>) -> bool {
        ok_or_names(&result, "s3://inv/manifest.json")
    }

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn valid_inventory_manifests_parse(json in valid_manifest()) {
            let parsed = InventoryManifest::parse(&json, "m");
            prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
        }

        #[test]
        fn garbage_inventory_manifests_never_panic(json in garbage()) {
            prop_assert!(named(InventoryManifest::parse(&json, "s3://inv/manifest.json")));
        }

        #[test]
        fn mutated_inventory_manifests_never_panic(json in mutated(valid_manifest())) {
            prop_assert!(named(InventoryManifest::parse(&json, "s3://inv/manifest.json")));
        }

        #[test]
        fn checksum_files_never_panic(json in garbage(), checksum in mutated_from(*b"c473bcc2407d0a5cec5229b21d967e59\n")) {
            prop_assert!(named(verify_checksum(&json, &checksum, "s3://inv/manifest.json")));
        }

        #[test]
        fn the_right_checksum_verifies(json in odd_text()) {
            let checksum = format!("{}\n", hex::encode(Md5::digest(json.as_bytes())).to_uppercase());
            prop_assert!(verify_checksum(json.as_bytes(), checksum.as_bytes(), "c").is_ok());
        }
    }
}
