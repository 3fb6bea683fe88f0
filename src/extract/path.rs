//! Where a member is written under the extraction folder (pure): member names that would
//! escape it (absolute paths, `..` segments) are refused. Symlinks already on disk are checked
//! when writing, in [`super::local`].

use std::path::PathBuf;

/// What a member becomes on disk, relative to the extraction folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalPath {
    File(PathBuf),
    /// A key ending in `/` (a folder marker).
    Folder(PathBuf),
}

impl LocalPath {
    pub fn relative(&self) -> &PathBuf {
        match self {
            LocalPath::File(path) | LocalPath::Folder(path) => path,
        }
    }
}

/// Why a member name cannot be written under the extraction folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("member `{name}` {reason}")]
pub struct UnsafeName {
    pub name: String,
    pub reason: &'static str,
}

/// The path of member `name` relative to the extraction folder.
pub fn local_path(name: &str) -> Result<LocalPath, UnsafeName> {
    let refuse = |reason| UnsafeName {
        name: name.to_string(),
        reason,
    };
    if name.contains('\0') {
        return Err(refuse("contains a NUL byte"));
    }
    if name.starts_with('/') {
        return Err(refuse("is an absolute path"));
    }
    let mut path = PathBuf::new();
    for segment in name.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(refuse("has a `..` segment that could leave the folder")),
            segment => path.push(segment),
        }
    }
    if path.as_os_str().is_empty() {
        return Err(refuse("names no file"));
    }
    Ok(if name.ends_with('/') {
        LocalPath::Folder(path)
    } else {
        LocalPath::File(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_stay_inside() {
        assert_eq!(
            local_path("src/a/b.txt"),
            Ok(LocalPath::File(PathBuf::from("src/a/b.txt")))
        );
        assert_eq!(
            local_path("src//./a b/caf\u{e9}..txt"),
            Ok(LocalPath::File(PathBuf::from("src/a b/caf\u{e9}..txt")))
        );
        assert_eq!(
            local_path("src/folder/"),
            Ok(LocalPath::Folder(PathBuf::from("src/folder")))
        );
        assert_eq!(
            local_path("src/...").map(|p| p.relative().clone()),
            Ok(PathBuf::from("src/..."))
        );
    }

    #[test]
    fn escaping_names_are_refused() {
        for (name, why) in [
            ("../evil", ".."),
            ("/abs", "absolute"),
            ("a/../../b", ".."),
            ("src/..", ".."),
            ("", "names no file"),
            ("./", "names no file"),
            ("a\0b", "NUL"),
        ] {
            let err = local_path(name)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(why), "{name:?}: {err}");
        }
    }
}
