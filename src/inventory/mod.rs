//! S3 Inventory reports: the manifest.json model and readers that turn data files into
//! [`InventoryRow`]s. Pure: readers take any `Read`, the network lives in `inventory::fetch`.

pub mod columnar;
pub mod columns;
pub mod csv;
pub mod fetch;
pub mod inflation;
pub mod manifest;
#[cfg(test)]
mod mutants;
pub mod orc;
pub mod ordered;
pub mod parquet;
pub mod ranges;

pub use manifest::{DataFile, FileFormat, InventoryManifest};

/// One row of an inventory report, borrowed from the reader's buffer. The key is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryRow<'a> {
    pub bucket: &'a str,
    pub key: std::borrow::Cow<'a, str>,
    /// `None` when the report has no VersionId column or the object has a null version.
    pub version_id: Option<&'a str>,
    /// `None` when the report has no IsLatest column (a current-version-only report).
    pub is_latest: Option<bool>,
    pub is_delete_marker: bool,
    /// `None` only for delete markers.
    pub size: Option<u64>,
    pub last_modified: Option<&'a str>,
    pub etag: Option<&'a str>,
    pub storage_class: Option<&'a str>,
    pub intelligent_tiering_access_tier: Option<&'a str>,
}

/// Where a row came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct RowPosition<'a> {
    pub file: &'a str,
    /// 1-based row number within the data file.
    pub row: u64,
}

impl std::fmt::Display for RowPosition<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}", self.file, self.row)
    }
}
