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

/// Where an object too big to bundle is copied: `PREFIX/H2/SOURCE/bigobjects/<key>`.
pub fn big_object_key(prefix: &str, source_bucket: &str, key: &str) -> String {
    let hash = hash_prefix(&format!("{source_bucket}/{key}"));
    join_prefix(prefix, &format!("{hash}/{source_bucket}/bigobjects/{key}"))
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
        assert!(is_bundle_output("", &big_object_key("", "src", "a/b")));
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
        let key = big_object_key("bundles", "src", "a/b c.bin");
        assert!(
            key.starts_with("bundles/") && key.ends_with("/src/bigobjects/a/b c.bin"),
            "{key}"
        );
    }
}
