//! Where a bundle's outputs go, compatible with the original tools: for a manifest named NAME
//! whose objects live in SOURCE, with H the first 6 hex digits of md5(`SOURCE/NAME`), the
//! archive is `PREFIX/H/SOURCE/NAME.tar` and the index `PREFIX/H/SOURCE/NAME.index`.

use md5::{Digest, Md5};

use crate::manifest::join_prefix;

/// Compression of the archive stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "tar.gz",
            Compression::Zstd => "tar.zst",
        }
    }
}

/// The index beside an archive (`…/NAME.tar`, `.tar.gz`, `.tar.zst` gives `…/NAME.index`) and
/// the archive's compression; `None` for a key that is not an archive's.
pub fn index_key_for_archive(archive_key: &str) -> Option<(String, Compression)> {
    [Compression::Gzip, Compression::Zstd, Compression::None]
        .into_iter()
        .find_map(|compression| {
            let stem = archive_key.strip_suffix(&format!(".{}", compression.extension()))?;
            (!stem.is_empty() && !stem.ends_with('/'))
                .then(|| (format!("{stem}.index"), compression))
        })
}

/// NAME of a manifest: its base name without the last extension, unless the base name ends
/// in a digit, in which case the whole base name.
pub fn manifest_name(manifest_key: &str) -> &str {
    let base = manifest_key.rsplit('/').next().unwrap_or(manifest_key);
    if base.ends_with(|c: char| c.is_ascii_digit()) {
        return base;
    }
    match base.rfind('.') {
        Some(dot) if dot > 0 => &base[..dot],
        _ => base,
    }
}

/// The first 6 hex digits of md5(`text`): spreads keys over S3 partitions.
pub fn hash_prefix(text: &str) -> String {
    let digest = hex::encode(Md5::digest(text.as_bytes()));
    digest[..6].to_string()
}

/// Keys of one bundle's outputs in the archive bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleLayout {
    pub archive_key: String,
    pub index_key: String,
    /// Beside the manifest, in the manifest's bucket.
    pub dlq_key: String,
}

impl BundleLayout {
    pub fn new(
        prefix: &str,
        source_bucket: &str,
        manifest_key: &str,
        compression: Compression,
    ) -> Self {
        let name = manifest_name(manifest_key);
        let folder = join_prefix(
            prefix,
            &format!(
                "{}/{source_bucket}",
                hash_prefix(&format!("{source_bucket}/{name}"))
            ),
        );
        BundleLayout {
            archive_key: format!("{folder}/{name}.{}", compression.extension()),
            index_key: format!("{folder}/{name}.index"),
            dlq_key: format!("{manifest_key}.dlq"),
        }
    }
}

/// True for a key `bundle` writes under `prefix` of the archive bucket
/// (`PREFIX/H/SOURCE/…`, H six hex digits): an index there is not a bundle manifest.
pub fn is_bundle_output(prefix: &str, key: &str) -> bool {
    let prefix = prefix.trim_matches('/');
    let rest = if prefix.is_empty() {
        Some(key)
    } else {
        key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/'))
    };
    rest.and_then(|r| r.split_once('/'))
        .is_some_and(|(hash, rest)| {
            hash.len() == 6
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && rest.contains('/')
        })
}

/// Which of a key's contents a big-object copy holds, so that two versions of one key never
/// share a copy (a committed copy is never replaced): the manifest's version ID, or else its
/// ETag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOf<'a> {
    Version(&'a str),
    Etag(&'a str),
    /// A manifest that names neither (the original tools' three columns).
    Unknown,
}

impl<'a> CopyOf<'a> {
    /// From a manifest entry's version ID and ETag; the version `null` (an object written
    /// while versioning was off) names no version.
    pub fn of(version_id: Option<&'a str>, etag: Option<&'a str>) -> Self {
        let named = |v: Option<&'a str>| v.map(|v| v.trim_matches('"')).filter(|v| !v.is_empty());
        match (named(version_id).filter(|v| *v != "null"), named(etag)) {
            (Some(version), _) => CopyOf::Version(version),
            (None, Some(etag)) => CopyOf::Etag(etag),
            (None, None) => CopyOf::Unknown,
        }
    }
}

/// Where an object too big to bundle is copied: `PREFIX/H2/SOURCE/bigobjects-by-version/V/<key>`
/// or `PREFIX/H2/SOURCE/bigobjects-by-etag/E/<key>`, or the original tools'
/// `PREFIX/H2/SOURCE/bigobjects/<key>` when the manifest names neither. The version or ETag is
/// one path segment (`%` and `/` percent-encoded), so no two (key, version) pairs share a key.
pub fn big_object_key(prefix: &str, source_bucket: &str, key: &str, of: CopyOf<'_>) -> String {
    let hash = hash_prefix(&format!("{source_bucket}/{key}"));
    let segment = |text: &str| text.replace('%', "%25").replace('/', "%2F");
    let folder = match of {
        CopyOf::Version(version) => format!("bigobjects-by-version/{}", segment(version)),
        CopyOf::Etag(etag) => format!("bigobjects-by-etag/{}", segment(etag)),
        CopyOf::Unknown => "bigobjects".to_string(),
    };
    join_prefix(prefix, &format!("{hash}/{source_bucket}/{folder}/{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names() {
        assert_eq!(
            manifest_name("s3grouper-output/src-cfg-manifest.0.index"),
            "src-cfg-manifest.0"
        );
        assert_eq!(
            manifest_name("p/src-cfg-manifest.3.glacier.index"),
            "src-cfg-manifest.3.glacier"
        );
        assert_eq!(manifest_name("p/manifest.12"), "manifest.12");
        assert_eq!(manifest_name("plain"), "plain");
        assert_eq!(manifest_name(".hidden"), ".hidden");
    }

    #[test]
    fn layout_matches_the_original_tools() {
        let layout = BundleLayout::new(
            "bundles",
            "src",
            "s3grouper-output/x-manifest.0.index",
            Compression::None,
        );
        let h = hash_prefix("src/x-manifest.0");
        assert_eq!(h.len(), 6);
        assert_eq!(
            layout.archive_key,
            format!("bundles/{h}/src/x-manifest.0.tar")
        );
        assert_eq!(
            layout.index_key,
            format!("bundles/{h}/src/x-manifest.0.index")
        );
        assert_eq!(layout.dlq_key, "s3grouper-output/x-manifest.0.index.dlq");
        let gz = BundleLayout::new("", "src", "m.0.index", Compression::Gzip);
        assert!(gz.archive_key.ends_with("/src/m.0.tar.gz") && !gz.archive_key.starts_with('/'));
        assert_eq!(
            hash_prefix("src/m.0"),
            &hex::encode(Md5::digest(b"src/m.0"))[..6]
        );
    }

    #[test]
    fn archives_name_their_index() {
        assert_eq!(
            index_key_for_archive("b/abc123/src/m.0.tar"),
            Some(("b/abc123/src/m.0.index".to_string(), Compression::None))
        );
        assert_eq!(
            index_key_for_archive("m.0.tar.gz"),
            Some(("m.0.index".to_string(), Compression::Gzip))
        );
        assert_eq!(
            index_key_for_archive("x/m.tar.zst").map(|(_, c)| c),
            Some(Compression::Zstd)
        );
        assert_eq!(index_key_for_archive("m.0.index"), None);
        assert_eq!(index_key_for_archive("x/.tar"), None);
    }

    #[test]
    fn bundle_outputs_are_told_from_manifests() {
        let layout = BundleLayout::new("bundles", "src", "m/x.0.index", Compression::None);
        assert!(is_bundle_output("bundles", &layout.index_key));
        assert!(is_bundle_output("/bundles/", &layout.archive_key));
        assert!(is_bundle_output(
            "",
            &BundleLayout::new("", "s", "x.0.index", Compression::None).index_key
        ));
        assert!(is_bundle_output(
            "",
            &big_object_key("", "src", "a/b", CopyOf::Unknown)
        ));
        assert!(!is_bundle_output(
            "bundles",
            "s3grouper-output/src-manifest.0.index"
        ));
        assert!(!is_bundle_output(
            "",
            "s3grouper-output/src-manifest.0.index"
        ));
        assert!(!is_bundle_output("", "abcdef.index"));
        assert!(!is_bundle_output("other", &layout.index_key));
    }

    #[test]
    fn big_objects_keep_their_key() {
        let key = big_object_key("bundles", "src", "a/b c.bin", CopyOf::Unknown);
        assert!(
            key.starts_with("bundles/") && key.ends_with("/src/bigobjects/a/b c.bin"),
            "{key}"
        );
    }

    /// Two versions of one key, or two contents of an unversioned key, never share a copy;
    /// no version or ETag can make one key's copy land on another key's.
    #[test]
    fn each_version_of_a_big_object_has_a_copy_of_its_own() {
        let key = |k: &str, of| big_object_key("p", "src", k, of);
        let v1 = key("a", CopyOf::of(Some("v1"), Some("e1")));
        let v2 = key("a", CopyOf::of(Some("v2"), Some("e1")));
        assert!(v1.ends_with("/src/bigobjects-by-version/v1/a"), "{v1}");
        assert_ne!(v1, v2);
        let e1 = key("a", CopyOf::of(Some("null"), Some("\"e1\"")));
        assert!(e1.ends_with("/src/bigobjects-by-etag/e1/a"), "{e1}");
        assert_ne!(e1, key("a", CopyOf::of(None, Some("e2"))));
        // A version with a slash stays one segment.
        assert_ne!(
            key("b/c", CopyOf::Version("x")),
            key("c", CopyOf::Version("x/b"))
        );
        assert!(key("c", CopyOf::Version("x/b")).ends_with("/bigobjects-by-version/x%2Fb/c"));
        assert_eq!(CopyOf::of(Some(""), None), CopyOf::Unknown);
    }
}
